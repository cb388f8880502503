"""Why the cluster refused a connection, in words: SASL authentication and TLS certificate checks.

librdkafka reports a rejected password as ``_AUTHENTICATION`` ("SASL authentication error: …") and
every failed certificate check with the same text ("certificate verify failed: broker certificate
could not be verified …"), whether the certificate expired, names another host or comes from a CA
nobody gave it. Neither passes with time, so the service gives up at once (instead of retrying until
``kafka.startup_timeout_seconds``) with a message that names the cause; for a certificate the cause
comes from a second handshake with the same trust settings in Python's :mod:`ssl`, which reports
OpenSSL's verification result.

>>> err = KafkaError(KafkaError._AUTHENTICATION,
...     "sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed during "
...     "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 12ms in state "
...     "AUTH_REQ)")
>>> print(permanent_failure(err, {"sasl.username": "monitor", "sasl.mechanism": "SCRAM-SHA-512"}))
authentication failed at b:9093: the broker rejected the SASL SCRAM-SHA-512 credentials of user \
'monitor' (Authentication failed during authentication due to invalid credentials with SASL mechanism \
SCRAM-SHA-512): check kafka.common.sasl.username and sasl.password
>>> permanent_failure(KafkaError(KafkaError._TRANSPORT, "b:9093/bootstrap: Connection refused"), {}) is None
True
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

__all__ = ["broker_of", "permanent_failure", "tls_verify_problem"]

# OpenSSL's X509_V_ERR_* codes that say why a certificate was refused.
_EXPIRED = 10
_NOT_YET_VALID = 9
_HOST_MISMATCH = (62, 64)  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_UNTRUSTED = (2, 18, 19, 20, 21)  # no issuer, self-signed (leaf or in chain), local issuer, leaf signature

_BROKER = re.compile(r"(?:[a-z_]+://)?(\[[^\]]+\]:\d+|[^/\s:]+:\d+)/")
_TIMING = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)\s*$")


def broker_of(text: str) -> tuple[str, int] | None:
    """The ``(host, port)`` a librdkafka error text names (``sasl_ssl://host:port/1: …``).

    >>> broker_of("sasl_ssl://127.0.0.1:9093/bootstrap: SSL handshake failed"), broker_of("[::1]:9/1: x")
    (('127.0.0.1', 9093), ('::1', 9))
    """
    match = _BROKER.search(text)
    if match is None:
        return None
    host, _, port = match.group(1).rpartition(":")
    return host.strip("[]"), int(port)


def _detail(text: str) -> str:
    """librdkafka's reason without the broker prefix and the timing suffix."""
    _, sep, rest = text.partition(": ")
    return _TIMING.sub("", rest if sep and broker_of(text) else text)


def permanent_failure(error: KafkaError, settings: Mapping[str, Any], diagnose: bool = True) -> str | None:
    """A message naming the cause when ``error`` is an authentication or certificate failure that
    retrying cannot fix, else ``None``.

    ``settings``: the client's librdkafka settings (``kafka.common``): the user and mechanism for the
    message, the trust settings for the certificate diagnosis (``diagnose``: make that second
    handshake; off in tests without a broker).
    """
    code, text = error.code(), error.str()
    where = broker_of(text)
    address = "the broker" if where is None else f"{_hostport(*where)}"
    if code == KafkaError.SASL_AUTHENTICATION_FAILED or (
        code == KafkaError._AUTHENTICATION and "SASL" in text
    ):
        mechanism = str(settings.get("sasl.mechanism", settings.get("sasl.mechanisms", "GSSAPI"))).upper()
        user = settings.get("sasl.username")
        whose = f" of user {user!r}" if user else ""
        reason = _detail(text).removeprefix("SASL authentication error: ")
        return (
            f"authentication failed at {address}: the broker rejected the SASL {mechanism} credentials"
            f"{whose} ({reason}): check kafka.common.sasl.username and sasl.password"
        )
    if code in (KafkaError._SSL, KafkaError._AUTHENTICATION) and "certificate verify failed" in text:
        cause = "its certificate could not be verified"
        if diagnose and where is not None:
            cause = tls_verify_problem(where[0], where[1], settings) or cause
        return f"TLS handshake with {address} failed: {cause}"
    return None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    """A client context that trusts what librdkafka trusts with these settings."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca_pem = settings.get("ssl.ca.pem")
    ca_location = str(settings.get("ssl.ca.location") or "")
    if ca_pem:
        context.load_verify_locations(cadata=str(ca_pem))
    elif ca_location and ca_location != "probe":
        if os.path.isdir(ca_location):
            context.load_verify_locations(capath=ca_location)
        else:
            context.load_verify_locations(cafile=ca_location)
    else:
        context.load_default_certs()
    algorithm = str(settings.get("ssl.endpoint.identification.algorithm", "https")).lower()
    context.check_hostname = algorithm == "https"
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_verify_problem(host: str, port: int, settings: Mapping[str, Any], timeout: float = 5.0) -> str | None:
    """Why the certificate of ``host:port`` fails verification with these trust settings (a handshake
    of our own), ``None`` when it passes or the broker cannot be reached."""
    given = settings.get("ssl.ca.location") or ("ssl.ca.pem" if settings.get("ssl.ca.pem") else None)
    try:
        context = _context(settings)
    except (OSError, ssl.SSLError) as exc:
        return f"the CA certificates of ssl.ca.location={given} cannot be read ({exc})"
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        code, message = exc.verify_code, exc.verify_message
    except (OSError, ssl.SSLError):
        return None
    if code == _EXPIRED:
        return "the broker's certificate has expired: renew it (or check this host's clock)"
    if code == _NOT_YET_VALID:
        return "the broker's certificate is not valid yet (check the clocks of the broker and this host)"
    if code in _HOST_MISMATCH:
        return (
            f"the broker's certificate does not match the host name {host} ({message}): connect with a "
            "name the certificate lists, or give the broker a certificate for this name"
        )
    if code in _UNTRUSTED:
        source = (
            f"the CA in {'ssl.ca.pem' if given == 'ssl.ca.pem' else f'ssl.ca.location={given}'}"
            if given
            else "any CA this host trusts (kafka.common.ssl.ca.location is not set)"
        )
        return (
            f"the broker's certificate is not signed by {source} ({message}): set "
            "kafka.common.ssl.ca.location to the CA certificate that signed it"
        )
    return f"the broker's certificate was refused ({message})"
