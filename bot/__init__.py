"""Daily Papers: the daemon and its faces (config, arXiv, poll cycle, digest, commands, CLI)."""

__version__ = "0.1.0"
