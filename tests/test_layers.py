"""The layers of the package, enforced: a pure core, one module that wires, thin edges.

Read from the code's own imports (AST, so a lazy import inside a function counts too):

- ``stream_monitor.core`` imports nothing of the edges (``kafka``, ``web``, ``offline``, ``app``,
  ``config``, ``cli``), nor confluent_kafka, prometheus_client, matplotlib or any HTTP/socket module,
  and never opens files or reads the wall clock or the environment: time is the ``now`` parameter;
- ``web`` (metrics exporter, status page, server) knows the core, never Kafka or the offline tools;
- ``app`` wires core and web, and knows neither Kafka nor the offline tools;
- nothing imports ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stream_monitor"

FORBIDDEN = {
    "core": {
        "stream_monitor.kafka",
        "stream_monitor.web",
        "stream_monitor.offline",
        "stream_monitor.app",
        "stream_monitor.config",
        "stream_monitor.cli",
        "confluent_kafka",
        "prometheus_client",
        "matplotlib",
        "http",
        "socket",
        "socketserver",
        "urllib",
        "yaml",
    },
    "web": {"stream_monitor.kafka", "stream_monitor.offline", "stream_monitor.app", "stream_monitor.cli"},
    "app": {"stream_monitor.kafka", "stream_monitor.offline", "stream_monitor.cli", "confluent_kafka"},
}
# Calls that touch files, the clock or the environment: never in the core.
IMPURE_CALLS = {
    "open",
    "time.time",
    "time.monotonic",
    "time.perf_counter",
    "datetime.now",
    "datetime.utcnow",
    "os.getenv",
    "read_bytes",
    "read_text",
    "write_bytes",
    "write_text",
}


def _modules(layer: str) -> list[Path]:
    if layer in ("app",):
        return [PACKAGE / "app.py"]
    return sorted((PACKAGE / layer).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
                if isinstance(func.value, ast.Name):
                    names.add(f"{func.value.id}.{func.attr}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) == ("os", "environ")
        ):
            names.add("os.environ")
    return names


def _violations(imported: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in imported if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_is_below_it(layer: str) -> None:
    modules = _modules(layer)
    assert modules, f"no modules in layer {layer}"
    bad = {
        str(path.relative_to(PACKAGE)): _violations(_imports(path), FORBIDDEN[layer])
        for path in modules
        if _violations(_imports(path), FORBIDDEN[layer])
    }
    assert not bad, f"{layer} imports from a layer above it: {bad}"


def test_core_never_touches_files_clock_or_environment() -> None:
    bad = {}
    for path in _modules("core"):
        impure = _calls(path) & (IMPURE_CALLS | {"os.environ"})
        if impure:
            bad[str(path.relative_to(PACKAGE))] = sorted(impure)
    assert not bad, f"impure calls in the core: {bad}"


def test_nothing_imports_the_cli() -> None:
    importers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "cli.py" and any(m.startswith("stream_monitor.cli") for m in _imports(path))
    ]
    assert importers == []


def test_the_check_can_fail(tmp_path: Path) -> None:
    """The checks above read real imports and calls (a core module that did this would fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nfrom stream_monitor.web.metrics import ServiceMetrics\n"
        "def f():\n    from confluent_kafka import Consumer\n    return time.time(), open('x')\n"
    )
    assert _violations(_imports(bad), FORBIDDEN["core"]) == [
        "confluent_kafka",
        "confluent_kafka.Consumer",
        "stream_monitor.web.metrics",
        "stream_monitor.web.metrics.ServiceMetrics",
    ]
    assert {"open", "time.time"} <= _calls(bad)
