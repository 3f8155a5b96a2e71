"""cscfs: an offline-capable network folder for Linux, served from a local cache."""

__version__ = "0.1.0"
