"""The one error the input builder raises: a request it refuses to describe."""

from __future__ import annotations


class BadRequest(ValueError):
    """The CheckRequest cannot be turned into an input document; message is a
    short, secret-free reason (never include header values or body content)."""
