"""``docker-compose.yml``, ``Dockerfile`` and ``.dockerignore`` (issue 4, points 1 and 2).

Docker's engine is not available where these tests run, so nothing here builds or starts a container:
the compose file is validated against the Compose Specification's JSON schema (vendored by the
``check-jsonschema`` package; no network) and its references are checked — images pinned by version,
every mounted file present, ports and hostnames consistent with the Prometheus, Grafana and
stream-monitor configurations they connect. The Dockerfile is parsed for its structure.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_monitor.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"kafka", "kafka-init", "stream-monitor", "producer", "prometheus", "alertmanager", "grafana"}
PINNED = re.compile(r"^[\w./-]+:v?\d+(\.\d+)+(-[\w.]+)?$")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of the service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        out[container] = (ROOT / host).resolve()
    return out


def host_port(service: dict[str, Any], container_port: int) -> int:
    for mapping in service.get("ports", []):
        host, _, inner = str(mapping).rpartition(":")
        if int(inner) == container_port:
            return int(host)
    raise AssertionError(f"port {container_port} not published")


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` in a command list."""
    return next(a.split("=", 1)[1] for a in command if a.startswith(name + "="))


def test_compose_file_matches_the_compose_specification() -> None:
    try:
        import check_jsonschema
        import jsonschema
    except ImportError:
        message = "check-jsonschema is not installed (pip install check-jsonschema)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)", pytrace=False)
        pytest.skip(message)
    schema_path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors


def test_services_images_pinned_and_dependencies_exist() -> None:
    s = services()
    assert set(s) == SERVICES
    for name, svc in s.items():
        assert "image" in svc, name
        assert PINNED.match(svc["image"]), f"{name}: image {svc['image']!r} is not pinned to a version"
        for dep in svc.get("depends_on", {}):
            assert dep in s, f"{name} depends on unknown service {dep}"
    assert s["kafka"]["image"].startswith("apache/kafka:")
    assert s["kafka-init"]["image"] == s["kafka"]["image"]
    # The service and the producer are this repository's image.
    for name in ("stream-monitor", "producer"):
        assert s[name]["build"] == "." and (ROOT / "Dockerfile").is_file()
        assert s[name]["image"] == s["stream-monitor"]["image"]


def test_every_bind_mount_exists() -> None:
    for name, svc in services().items():
        for container, host in mounts(svc).items():
            assert host.exists(), f"{name}: {host} (mounted at {container}) does not exist"


def test_kafka_is_single_node_kraft_and_the_clients_use_its_listener() -> None:
    s = services()
    env = s["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name in ("stream-monitor", "producer"):
        assert s[name]["environment"]["STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    init = " ".join(s["kafka-init"]["command"])
    assert "--bootstrap-server kafka:9092" in init
    # predictions and labels are created with the same partition count (co-partitioned join).
    parts = dict(re.findall(r"--topic (\S+) --partitions (\d+)", init))
    assert parts["predictions"] == parts["labels"]
    assert s["stream-monitor"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_stream_monitor_config_env_and_ports_are_consistent() -> None:
    s = services()
    sm = s["stream-monitor"]
    assert sm["command"][:2] == ["run", "--config"]
    config_path = sm["command"][2]
    host_config = mounts(sm)[config_path]
    env = {k: str(v) for k, v in sm["environment"].items()}
    app = parse_config(yaml.safe_load(host_config.read_text()), env=env)
    assert app.kafka.bootstrap_servers == "kafka:9092"
    assert app.metrics.host == "0.0.0.0", "must listen beyond the container's loopback"
    assert host_port(sm, app.metrics.port) == app.metrics.port
    topics = {app.kafka.topics.predictions, app.kafka.topics.labels}
    assert topics <= set(re.findall(r"--topic (\S+)", " ".join(s["kafka-init"]["command"])))

    prod = s["producer"]
    assert prod["command"][0] == "produce" and "--source" in prod["command"]
    assert prod["command"][prod["command"].index("--config") + 1] == config_path
    assert mounts(prod)[config_path] == host_config
    assert prod["depends_on"]["stream-monitor"]["condition"] == "service_healthy"  # image HEALTHCHECK


def test_prometheus_scrapes_the_service_and_loads_the_rules() -> None:
    s = services()
    prom = s["prometheus"]
    m = mounts(prom)
    config_file = flag(prom["command"], "--config.file")
    config = yaml.safe_load(m[config_file].read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = jobs["stream-monitor"]["static_configs"][0]["targets"]
    port = parse_config(
        yaml.safe_load(mounts(s["stream-monitor"])["/etc/stream-monitor/config.yaml"].read_text()),
        env={k: str(v) for k, v in s["stream-monitor"]["environment"].items()},
    ).metrics.port
    assert targets == [f"stream-monitor:{port}"]
    base = Path(config_file).parent
    for rule_file in config["rule_files"]:
        container = (base / rule_file).as_posix()
        host = next(h / Path(container).relative_to(c) for c, h in m.items() if container.startswith(c))
        assert host.is_file(), f"rule file {rule_file} is not mounted"
    am_targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am_targets == [f"alertmanager:{host_port(s['alertmanager'], 9093)}"]
    am_config = next(
        a.split("=", 1)[1] for a in s["alertmanager"]["command"] if a.startswith("--config.file=")
    )
    assert mounts(s["alertmanager"])[am_config].is_file()


def test_grafana_gets_the_datasource_and_dashboards() -> None:
    s = services()
    graf = s["grafana"]
    m = mounts(graf)
    ds_dir = m["/etc/grafana/provisioning/datasources"]
    (ds,) = yaml.safe_load((ds_dir / "prometheus.yml").read_text())["datasources"]
    assert ds["url"] == f"http://prometheus:{host_port(s['prometheus'], 9090)}"
    provider = yaml.safe_load((m["/etc/grafana/provisioning/dashboards"] / "stream-monitor.yml").read_text())
    (p,) = provider["providers"]
    dash_dir = m[p["options"]["path"]]
    assert list(dash_dir.glob("*.json"))
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dash_dir / Path(home).relative_to(p["options"]["path"])).is_file()


# ------------------------------------------------------------------------------ Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_multi_stage_slim_non_root_with_healthcheck() -> None:
    steps = dockerfile()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG"}
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    images = [f.split()[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"]) for f in froms]
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    final_start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[final_start:]
    final_words = [w for w, _ in final]
    # Only the virtualenv comes from the build stage; no compilers or pip installs in the final one.
    copies = [rest for word, rest in final if word == "COPY"]
    assert any(c.startswith("--from=build /opt/venv") for c in copies)
    for word, rest in final:
        if word == "RUN":
            assert not re.search(r"apt-get install|pip install|gcc|build-essential", rest), rest
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert final_words.index("USER") > max(i for i, w in enumerate(final_words) if w in ("RUN", "COPY"))
    health = next(rest for word, rest in final if word == "HEALTHCHECK")
    assert "/healthz" in health
    assert json.loads(next(rest for word, rest in final if word == "ENTRYPOINT")) == ["stream-monitor"]
    cmd = json.loads(next(rest for word, rest in final if word == "CMD"))
    assert cmd[:2] == ["run", "--config"]
    # The default config baked into the image is where CMD reads it, and compose mounts over it.
    assert any(c.endswith(cmd[2]) for c in copies)
    assert cmd[2] in mounts(services()["stream-monitor"])


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list keeps .git, tests and local state out of the context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for word, rest in dockerfile():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
                assert (ROOT / source).exists(), source
