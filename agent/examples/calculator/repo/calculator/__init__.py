"""A tiny calculator."""

from calculator.operations import add, divide, multiply, subtract

__all__ = ["add", "subtract", "multiply", "divide"]
