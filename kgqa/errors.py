"""The project's own errors. Each message names what was wrong (the file and line, or the key
and its valid choices); the entry points print it as one line and exit non-zero (kgqa.cli)."""


class KgqaError(Exception):
    """A user error: bad input, a foreign file, a wrong setting. Never a bug of ours."""


class DataError(KgqaError, ValueError):
    """Bad input data; the message names the file and line."""


class CheckpointError(KgqaError, RuntimeError):
    """A missing, truncated, foreign or untrusted checkpoint or run folder."""


class ConfigError(KgqaError, ValueError):
    """A configuration value that cannot work; the message names the key and its valid choices."""
