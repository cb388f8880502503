"""The HTTP endpoint's web configuration: TLS and basic auth, in the format of Prometheus' exporters.

``http.web_config_file`` names a YAML file in the format of prometheus/exporter-toolkit (what
node_exporter's ``--web.config.file`` reads), so an operator configures stream-monitor as every other
exporter, and a Prometheus scrape job with ``scheme: https``, ``tls_config`` and ``basic_auth`` works
unchanged::

    tls_server_config:
      cert_file: server.crt            # relative paths: from the web config file's directory
      key_file: server.key
      # client_auth_type: RequireAndVerifyClientCert   (with client_ca_file: mutual TLS)
      # min_version: TLS12              (the default; TLS10..TLS13)
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hashes only (htpasswd -nBC 10 "" | tr -d ':\\n')

Supported: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_ca_file``,
``client_auth_type`` ``NoClientCert`` | ``VerifyClientCertIfGiven`` | ``RequireAndVerifyClientCert``,
``min_version``, ``max_version``) and ``basic_auth_users``. Keys of the format that stream-monitor does
not implement (``cipher_suites``, ``http_server_config``, inline ``cert``/``key`` …) are an error, not
silently ignored; so is an unknown key (exporter-toolkit reads the file strictly as well).

The certificate and key files are read again when they change (checked at each new connection: a
``stat`` of each file), so a renewed certificate (cert-manager, a cron job) is served without a
restart; a renewal that cannot be loaded is logged and the previous certificate stays in use. Users
are read at start-up (a change needs a restart).

Passwords are checked with bcrypt (:class:`BasicAuth`): constant-time, and a credential that was
verified once is remembered as a SHA-256 digest (an LRU of :data:`AUTH_CACHE_SIZE`), so a scrape every
few seconds costs a hash, not a bcrypt round (~0.1 s of CPU at cost 10).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stream_monitor.errors import ConfigError

log = logging.getLogger("stream_monitor.http")

CONFIG_KEY = "http.web_config_file"
#: Verified credentials remembered (digests only); more distinct users than this re-verify.
AUTH_CACHE_SIZE = 128
#: bcrypt reads at most 72 bytes of a password; a longer one never matches (as in Go's bcrypt).
BCRYPT_MAX_PASSWORD = 72
REALM = "stream-monitor"
WWW_AUTHENTICATE = f'Basic realm="{REALM}", charset="UTF-8"'

_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_TOP_KEYS = ("tls_server_config", "basic_auth_users")
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
# Keys of exporter-toolkit's format that stream-monitor does not implement: refused by name.
_UNSUPPORTED = {
    "http_server_config": "HTTP/2 and response headers are not configurable here",
    "rate_limit": "not implemented (the server holds at most 32 connections)",
    "tls_server_config.cert": "give cert_file",
    "tls_server_config.key": "give key_file",
    "tls_server_config.client_ca": "give client_ca_file",
    "tls_server_config.cipher_suites": "Python's ssl module keeps OpenSSL's default suites",
    "tls_server_config.curve_preferences": "Python's ssl module keeps OpenSSL's default curves",
    "tls_server_config.prefer_server_cipher_suites": "not configurable with Python's ssl module",
    "tls_server_config.client_allowed_sans": "not implemented",
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class TLSSettings:
    """``tls_server_config``: the server certificate and, optionally, client certificate checks."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str | None = None

    def files(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())

    def context(self) -> ssl.SSLContext:
        """A server context; ``ssl.SSLError``/``OSError`` when a file cannot be loaded."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _TLS_VERSIONS[self.min_version]
        if self.max_version is not None:
            ctx.maximum_version = _TLS_VERSIONS[self.max_version]
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.verify_mode = _CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
        return ctx


@dataclass(frozen=True)
class WebConfig:
    """A parsed web configuration file: TLS (or none) and the basic-auth users (or none)."""

    path: str
    tls: TLSSettings | None = None
    # user -> bcrypt hash; not secret like a password, still kept out of repr and logs.
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)


def _fail(path: str, where: str, problem: str) -> ConfigError:
    return ConfigError(CONFIG_KEY, f"{path}: {where + ': ' if where else ''}{problem}")


def _mapping(value: Any, path: str, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(path, where, f"must be a mapping, got {value!r}")
    out: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = str(raw_key)
        dotted = f"{where}.{key}" if where else key
        if dotted in _UNSUPPORTED:
            raise _fail(path, dotted, f"not supported by stream-monitor ({_UNSUPPORTED[dotted]})")
        if key not in allowed:
            raise _fail(path, dotted, f"unknown key (expected one of: {', '.join(allowed)})")
        out[key] = item
    return out


def _text(section: Mapping[str, Any], key: str, path: str, where: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{where}.{key}", f"must be a non-empty string, got {value!r}")
    return value.strip()


def _tls(raw: Any, path: str, base: Path) -> TLSSettings | None:
    where = "tls_server_config"
    section = _mapping(raw, path, where, _TLS_KEYS)
    if not section:
        return None
    files: dict[str, str | None] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        value = _text(section, name, path, where)
        if value is not None:
            given = Path(value).expanduser()
            resolved = str(given if given.is_absolute() else base / given)
            if not os.access(resolved, os.R_OK):
                raise _fail(path, f"{where}.{name}", f"cannot read {resolved}")
            value = resolved
        files[name] = value
    cert, key = files["cert_file"], files["key_file"]
    if cert is None or key is None:
        raise _fail(path, where, "needs both cert_file and key_file")
    auth = _text(section, "client_auth_type", path, where) or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        problem = f"must be one of {', '.join(_CLIENT_AUTH)}, got {auth!r}"
        if auth in ("RequestClientCert", "RequireAnyClientCert"):
            problem += " (a client certificate that is not verified is not supported)"
        raise _fail(path, f"{where}.client_auth_type", problem)
    ca = files["client_ca_file"]
    if ca is not None and auth == "NoClientCert":
        raise _fail(path, where, "client_ca_file is set but client_auth_type is NoClientCert")
    if ca is None and auth != "NoClientCert":
        raise _fail(path, where, f"client_auth_type {auth} needs client_ca_file")
    versions: dict[str, str | None] = {}
    for name in ("min_version", "max_version"):
        version = _text(section, name, path, where)
        if version is not None and version not in _TLS_VERSIONS:
            problem = f"must be one of {', '.join(_TLS_VERSIONS)}, got {version!r}"
            raise _fail(path, f"{where}.{name}", problem)
        versions[name] = version
    tls = TLSSettings(cert, key, ca, auth, versions["min_version"] or "TLS12", versions["max_version"])
    try:
        tls.context()
    except (ssl.SSLError, OSError) as exc:
        raise _fail(path, where, f"cannot load the certificate, key or CA: {exc}") from None
    return tls


def _users(raw: Any, path: str) -> dict[str, bytes]:
    where = "basic_auth_users"
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail(path, where, f"must be a mapping of user name -> bcrypt hash, got {raw!r}")
    users: dict[str, bytes] = {}
    for raw_user, hashed in raw.items():
        user = str(raw_user)
        if not user or ":" in user:
            raise _fail(path, where, f"user name {user!r} must be non-empty and contain no ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed.strip()):
            raise _fail(
                path,
                f"{where}.{user}",
                "must be a bcrypt hash ($2y$…, 60 characters, e.g. from "
                "htpasswd -nBC 10 \"\" | tr -d ':\\n'), never a password",
            )
        users[user] = hashed.strip().encode("ascii")
    return users


def parse_web_config(path: str) -> WebConfig:
    """Read and check a web configuration file; :class:`ConfigError` (``http.web_config_file: …``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(path, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(path, "", f"not valid YAML: {exc}") from None
    top = _mapping(raw, path, "", _TOP_KEYS)
    base = Path(path).resolve().parent
    tls = _tls(top.get("tls_server_config"), path, base)
    return WebConfig(str(path), tls, _users(top.get("basic_auth_users"), path))


class TLSContextSource:
    """The server's ``SSLContext``, rebuilt when the certificate, key or CA file changes.

    Checked at each new connection with a ``stat`` per file; a changed file that cannot be loaded (a
    renewal half written) is logged once and the previous context stays in use.
    """

    def __init__(self, tls: TLSSettings) -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._context = tls.context()
        self._failed_stamp: tuple[Any, ...] | None = None

    def _stat(self) -> tuple[Any, ...]:
        stamps: list[Any] = []
        for name in self.tls.files():
            try:
                st = os.stat(name)
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def context(self) -> ssl.SSLContext:
        stamp = self._stat()
        if stamp == self._stamp:
            return self._context
        with self._lock:
            if stamp != self._stamp and stamp != self._failed_stamp:
                try:
                    self._context = self.tls.context()
                    self._stamp = stamp
                    self._failed_stamp = None
                    log.info("http: TLS certificate reloaded from %s", self.tls.cert_file)
                except (ssl.SSLError, OSError) as exc:
                    self._failed_stamp = stamp
                    log.error(
                        "http: TLS certificate changed but cannot be loaded (%s); kept the old one", exc
                    )
            return self._context


class BasicAuth:
    """HTTP basic auth against bcrypt hashes (``basic_auth_users``).

    :meth:`check` takes the ``Authorization`` header and answers whether it names a user with the right
    password. bcrypt compares in constant time, and an unknown user costs the same bcrypt round as a
    known one (against a configured hash, then refused), so timing tells neither whether a user exists
    nor how much of a password was right. A credential verified once is remembered as
    SHA-256(user, password, hash) in an LRU of :data:`AUTH_CACHE_SIZE`: the next scrapes cost one
    hash. Failures are not remembered, and bcrypt runs one at a time, so a client guessing passwords
    keeps at most one core busy and learns nothing from the cache.
    """

    def __init__(self, users: Mapping[str, bytes], cache_size: int = AUTH_CACHE_SIZE) -> None:
        if not users:
            raise ValueError("BasicAuth needs at least one user")
        import bcrypt  # only when basic auth is configured (see pyproject.toml for its cost)

        self._checkpw = bcrypt.checkpw
        self._users = dict(users)
        self._any_hash = next(iter(self._users.values()))
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self.bcrypt_rounds = 0  # bcrypt verifications run (tests check the cache with it)

    @staticmethod
    def credentials(header: str | None) -> tuple[str, bytes] | None:
        """``(user, password)`` of a ``Basic`` Authorization header, None when there is none.

        >>> BasicAuth.credentials("Basic " + base64.b64encode(b"prom:s3cr:et").decode())
        ('prom', b's3cr:et')
        >>> BasicAuth.credentials("Bearer abc") is None, BasicAuth.credentials("Basic !!") is None
        (True, True)
        """
        if not header:
            return None
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        try:
            return user.decode("utf-8"), password
        except UnicodeDecodeError:
            return None

    def check(self, header: str | None) -> bool:
        """Whether ``header`` (the request's ``Authorization``) holds a valid user and password."""
        creds = self.credentials(header)
        if creds is None:
            return False
        user, password = creds
        stored = self._users.get(user)
        digest = hashlib.sha256(
            b"%d:%s:%s:%s" % (len(user.encode()), user.encode(), stored or b"", password)
        ).digest()
        with self._cache_lock:
            if stored is not None and digest in self._cache:
                self._cache.move_to_end(digest)
                return True
        ok = False
        if len(password) <= BCRYPT_MAX_PASSWORD:
            with self._bcrypt_lock:
                self.bcrypt_rounds += 1
                try:
                    ok = bool(self._checkpw(password, stored or self._any_hash))
                except ValueError:
                    ok = False
        if not ok or stored is None:
            return False
        with self._cache_lock:
            self._cache[digest] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True
