"""Arithmetic on two numbers."""


def add(a, b):
    """Return the sum of a and b."""
    return a - b


def subtract(a, b):
    """Return a minus b."""
    return a - b


def multiply(a, b):
    """Return the product of a and b."""
    return a * b


def divide(a, b):
    """Return a divided by b; dividing by zero raises ZeroDivisionError."""
    return a / b
