"""The package's version (a module of its own, so anything may import it without a cycle)."""

__version__ = "0.1.0"
