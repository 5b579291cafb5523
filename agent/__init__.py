"""apprentice: a coding agent whose own sessions become its training data."""

__version__ = "0.1.0"
