"""One base exception for the project, small subclasses per concern."""


class StreamMonitorError(Exception):
    """Base class of every error stream-monitor raises on purpose."""


class ConfigError(StreamMonitorError):
    """An invalid configuration value; the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error at {key}: {problem}")
        self.key = key
        self.problem = problem


class StateError(StreamMonitorError):
    """A snapshot that cannot be restored (wrong version, corrupt bytes)."""
