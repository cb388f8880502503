# syntax=docker/dockerfile:1
# stream-monitor image: `docker build -t stream-monitor:0.1.0 .`
#   docker run --rm -v $PWD/examples/config.yaml:/etc/stream-monitor/config.yaml:ro \
#     -e STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS=broker:9092 -p 9108:9108 stream-monitor:0.1.0
# Stage 1 builds a virtualenv with the package and its dependencies (all of which ship manylinux
# wheels: confluent-kafka bundles librdkafka, so no compiler is needed); stage 2 is a slim runtime that
# receives only that virtualenv, runs as an unprivileged user, and has no pip/build tooling on PATH.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached while only the source changes).
COPY pyproject.toml README.md ./
COPY stream_monitor ./stream_monitor
RUN pip install --no-compile . \
 && pip uninstall -y pip setuptools wheel \
 && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="stream-monitor" \
      org.opencontainers.image.description="Kafka-native streaming drift detector for ML models" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 stream-monitor \
 && useradd --system --uid 10001 --gid stream-monitor --home-dir /nonexistent --shell /usr/sbin/nologin stream-monitor \
 && mkdir -p /etc/stream-monitor \
 && python -m pip uninstall -y -q pip setuptools wheel
COPY --from=build /opt/venv /opt/venv
COPY examples/config.yaml /etc/stream-monitor/config.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # Scraped from outside the container: listen on every interface (config: metrics.host).
    STREAM_MONITOR_METRICS__HOST=0.0.0.0
USER 10001:10001
EXPOSE 9108
# /healthz answers 200 while the process is alive and its loop has not died (readiness is /readyz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_MONITOR_METRICS__PORT', '9108'), timeout=4)"]
# SIGTERM: finish the batch, checkpoint, commit offsets, leave the group.
STOPSIGNAL SIGTERM
ENTRYPOINT ["stream-monitor"]
CMD ["run", "--config", "/etc/stream-monitor/config.yaml"]
