"""Command line: load, listen, announce readiness, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from opa_bindings import OpaEngine

from .app import build_app
from .evaluation import Evaluator
from .loader import LoadError, load_paths
from .wire import MAX_BODY_BYTES

EXIT_BAD_USAGE = 2  # also used for policies or data that cannot be loaded
EXIT_CANNOT_LISTEN = 1
# Go's net/http accepts up to 1 MiB of request line and headers; a GET ?input= can be long.
MAX_HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Address:
    host: str = ""
    port: int = 0
    unix_path: str | None = None


def parse_addr(text: str) -> Address:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT`, optionally `http://`-prefixed, or `unix:///path`."""
    if text.startswith("unix://"):
        path = text.removeprefix("unix://")
        if not path or path.startswith("@"):
            raise ValueError(f"unsupported unix socket address {text!r}")
        return Address(unix_path=path)
    host, sep, port = text.removeprefix("http://").rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {text!r} is not HOST:PORT or unix:///path")
    return Address(host=host.removeprefix("[").removesuffix("]"), port=int(port))


def _display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.opa_server",
        description="OPA-compatible REST server (data and health APIs) on the embedded OPA engine.",
    )
    parser.add_argument(
        "--addr", default="localhost:8181", help="HOST:PORT or unix:///path (default %(default)s)"
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="require `Authorization: Bearer TOKEN` on every request")
    token.add_argument("--token-file", type=Path, help="read the bearer token from this file")
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        help="refuse larger request bodies with 400 (default %(default)s, as OPA)",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help=".rego, .json, .yaml file or directory")
    return parser


async def serve(app: web.Application, address: Address) -> None:
    runner = web.AppRunner(
        app,
        access_log=None,
        auto_decompress=False,  # gzip bodies are decoded by the handlers, with OPA's messages
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    site: web.BaseSite
    try:
        if address.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                Path(address.unix_path).unlink()  # a stale socket file, as OPA does
            site = web.UnixSite(runner, address.unix_path)
            await site.start()
            shown = f"unix://{address.unix_path}"
        else:
            site = web.TCPSite(runner, address.host or None, address.port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            shown = _display(address.host or bound_host, bound_port)
        # Handlers first: a signal sent as soon as the line is read must still stop us cleanly.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"listening on {shown}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        if address.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                Path(address.unix_path).unlink()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        address = parse_addr(args.addr)
        token = args.token
        if args.token_file is not None:
            token = args.token_file.read_text(encoding="utf-8").strip()
    except (ValueError, OSError) as exc:
        print(f"opa_server: error: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    if token == "":
        print("opa_server: error: the bearer token is empty", file=sys.stderr)
        return EXIT_BAD_USAGE
    engine = OpaEngine()
    try:
        load_paths(engine, args.paths)
    except LoadError as exc:
        print(f"opa_server: error: cannot load policies or data: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    app = build_app(Evaluator(engine), token=token, max_body=args.max_request_bytes)
    try:
        asyncio.run(serve(app, address))
    except OSError as exc:
        print(f"opa_server: error: cannot listen on {args.addr}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    finally:
        engine.close()
    return 0
