"""The OPA stand-in (tests.opa_server, on the real engine) with a decision record: every
yes it sends is appended to a file, one line per answer, before the answer leaves.

    python -m tests.adversarial.recording_opa --addr 127.0.0.1:0 --record yes.txt POLICY...

A yes is a 200 from the data API whose `result` is `true` (recorded as `?`) or an object
with `"allowed": true` (recorded as its `headers["x-chaos-check"]`, the marker the chaos
policy puts there). The file is opened unbuffered, so a SIGKILL loses no line; a line
whose answer never reached the sidecar is harmless (the record may only say yes too often).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import IO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opa_bindings import OpaEngine

from tests.opa_server.app import build_app
from tests.opa_server.cli import parse_addr, serve
from tests.opa_server.evaluation import Evaluator
from tests.opa_server.loader import load_paths
from tests.opa_server.wire import MAX_BODY_BYTES

MARKER_HEADER = "x-chaos-check"


def yes_marker(body: bytes) -> str | None:
    """The marker of a yes answer, `?` for a bare `true`; None when the answer is not a yes."""
    try:
        result = json.loads(body).get("result")
    except (ValueError, AttributeError):
        return None
    if result is True:
        return "?"
    if isinstance(result, dict) and result.get("allowed") is True:
        headers = result.get("headers")
        marker = headers.get(MARKER_HEADER) if isinstance(headers, dict) else None
        return marker if isinstance(marker, str) else "?"
    return None


def recorder(record: IO[bytes]) -> Middleware:
    @web.middleware
    async def record_yes(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST" and response.status == 200 and isinstance(response, web.Response):
            body = response.body
            marker = yes_marker(body) if isinstance(body, bytes) else None
            if marker is not None:
                record.write(marker.encode() + b"\n")
        return response

    return record_yes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.adversarial.recording_opa", description=__doc__)
    parser.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--record", required=True, help="file to append each yes to")
    parser.add_argument("paths", nargs="+", metavar="PATH", help=".rego or data file, or a directory")
    args = parser.parse_args(argv)
    engine = OpaEngine()
    load_paths(engine, args.paths)
    app = build_app(Evaluator(engine), token=None, max_body=MAX_BODY_BYTES)
    with open(args.record, "ab", buffering=0) as record:
        app.middlewares.append(recorder(record))
        try:
            asyncio.run(serve(app, parse_addr(args.addr)))
        except OSError as exc:
            print(f"recording_opa: cannot listen on {args.addr}: {exc}", file=sys.stderr)
            return 1
        finally:
            engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
