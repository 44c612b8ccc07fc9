"""Errors that kexue raises for the user to act on.

The CLI prints these as one line (no traceback): their message must say what was wrong and what to do.
"""


class KexueError(Exception):
    """Base class for errors whose message is meant for the user."""


class ConfigError(KexueError, ValueError):
    """A configuration value (``--set key=value``, a preset, an option) is invalid."""


class DataMissingError(KexueError, FileNotFoundError):
    """A data set is not in the data cache; the message names the command that fetches it."""


class FetchError(KexueError, RuntimeError):
    """A data set could not be fetched from its package registry, or failed its checksum."""
