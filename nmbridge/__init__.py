"""nmbridge: a command-line bridge for netmap ports."""

__version__ = "0.1.0"
