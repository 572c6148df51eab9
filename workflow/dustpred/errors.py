"""Errors raised on bad input files and bad configuration values."""


class InputError(ValueError):
    """A file or config value is not what dustpred expects.

    The message names the file (or config key), what was found and what was expected.
    """


class ConfigError(InputError):
    """An invalid configuration value (the message names the key)."""
