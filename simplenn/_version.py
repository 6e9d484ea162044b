"""The version of simplenn."""

__version__ = "0.1.0"
