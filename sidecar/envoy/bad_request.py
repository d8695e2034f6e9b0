"""The one error the input builder raises: a request it refuses to describe."""

from __future__ import annotations


class BadRequest(ValueError):
    """The CheckRequest cannot be turned into an input document; message is a
    short, secret-free reason (never include header values or body content).
    ``http_status`` is 400, or 413 where the size is the cause."""

    def __init__(self, reason: str, *, http_status: int = 400) -> None:
        super().__init__(reason)
        self.http_status = http_status
