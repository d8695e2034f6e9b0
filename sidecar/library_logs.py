"""Log lines written by libraries, reduced to what cannot quote a request.

aiohttp's parser errors quote the bytes they choke on (a header, a token),
and asyncio's reports of a failed callback print its exception message and
the objects involved. A record from these loggers keeps its logger name, its
level, the library's message template when it has arguments (a constant of
the library's code), and the type and place of its exception; the arguments,
a message built with the data in it, and the exception's text are dropped.
"""

from __future__ import annotations

import logging

from sidecar.errors import describe

LIBRARY_LOGGERS = (
    "asyncio",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
)


class WithoutRequestData(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg if record.args and isinstance(record.msg, str) else "(message withheld)"
        if record.exc_info and record.exc_info[1] is not None:
            template = f"{template} [{describe(record.exc_info[1])}]"
        record.msg = template
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_FILTER = WithoutRequestData()


def withhold_request_data() -> None:
    """Install the filter on every library logger that handles request data
    (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
