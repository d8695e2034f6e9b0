"""What Envoy 1.40 forwards to ext_authz around its body buffer limit, observed live.

    python -m tests.e2e.observe_bodies            # the table of docs/envoy-bodies.md
    python -m tests.e2e.observe_bodies --bytes    # header and body bytes outside UTF-8

Runs the shipped configurations (sidecar/envoy/templates, rendered for this machine) with a
recording ext_authz server in place of the sidecar and the echo upstream behind Envoy, and
prints one Markdown row per request: what the check carried and what the upstream got.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import EnvoyProcess, local_addresses, start_envoy
from deploy.render import ENVOY_HTTP_TEMPLATE, ENVOY_TEMPLATE, render_envoy
from tests.e2e.envoy_wire import (
    RecordingGrpcAuthz,
    RecordingServer,
    Reply,
    chunked,
    h1_request,
    h2_request,
    recording_http_authz,
)

LIMIT = 8192  # with_request_body.max_request_bytes of the shipped configurations
SIZES = (8191, 8192, 8193, 20000)
PAUSE = 0.3  # long enough for Envoy to act on what it has before the next piece


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[int, bytes], Reply]  # (Envoy's port, body) -> reply


def _h1_length(port: int, body: bytes) -> Reply:
    head = b"POST /b HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: %d" % len(body)
    return h1_request(port, head, [body])


def _h1_chunks(split: Callable[[bytes], list[bytes]]) -> Callable[[int, bytes], Reply]:
    def send(port: int, body: bytes) -> Reply:
        head = b"POST /b HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked"
        return h1_request(port, head, chunked(split(body)), pause=PAUSE)

    return send


def _h2(split: Callable[[bytes], list[bytes]], with_length: bool) -> Callable[[int, bytes], Reply]:
    def send(port: int, body: bytes) -> Reply:
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/b")]
        headers.append((b"content-type", b"application/json"))
        if with_length:
            headers.append((b"content-length", str(len(body)).encode()))
        return h2_request(port, headers, split(body), pause=PAUSE)

    return send


def _whole(body: bytes) -> list[bytes]:
    return [body]


def _quarters(body: bytes) -> list[bytes]:
    """Four pieces (the last may be longer)."""
    step = len(body) // 4
    return [body[:step], body[step : 2 * step], body[2 * step : 3 * step], body[3 * step :]]


def _limit_then_rest(body: bytes) -> list[bytes]:
    """Exactly the buffer limit first, the rest after a pause (just the limit if no rest)."""
    return [body[:LIMIT], body[LIMIT:]] if len(body) > LIMIT else [body]


CASES = (
    Case("HTTP/1.1 content-length", _h1_length),
    Case("HTTP/1.1 chunked, one chunk", _h1_chunks(_whole)),
    Case("HTTP/1.1 chunked, 4 chunks, pauses", _h1_chunks(_quarters)),
    Case("HTTP/1.1 chunked, 8192 then rest", _h1_chunks(_limit_then_rest)),
    Case("HTTP/2 content-length, one write", _h2(_whole, True)),
    Case("HTTP/2 content-length, 4 writes, pauses", _h2(_quarters, True)),
    Case("HTTP/2 no length, one write", _h2(_whole, False)),
    Case("HTTP/2 no length, 4 writes, pauses", _h2(_quarters, False)),
    Case("HTTP/2 no length, 8192 then rest", _h2(_limit_then_rest, False)),
)


def cases_for(mode: str) -> tuple[Case, ...]:
    """The framings a mode's listener takes: the HTTP-mode one HTTP/1.1 only (codec_type: HTTP1)."""
    return tuple(case for case in CASES if mode == "grpc" or case.name.startswith("HTTP/1.1"))


def shipped_config(mode: str, upstream: str, authz: str, pack_as_bytes: bool | None = None) -> str:
    """The shipped template of `mode` for these addresses; `pack_as_bytes` overrides the
    template's choice (gRPC mode only)."""
    template = ENVOY_TEMPLATE if mode == "grpc" else ENVOY_HTTP_TEMPLATE
    config = render_envoy(local_addresses(upstream, authz), template)
    if pack_as_bytes is None:
        return config
    document = yaml.safe_load(config)
    hcm = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if pack_as_bytes is not None:
        [ext_authz] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
        ext_authz["typed_config"]["with_request_body"]["pack_as_bytes"] = pack_as_bytes
    return yaml.safe_dump(document, sort_keys=False)


@dataclass
class Observer:
    """Envoy in `mode` with a recording authz server: `.checks()` and `.upstream`."""

    mode: str
    envoy: EnvoyProcess
    upstream: EchoUpstream | None  # None: the caller keeps its own
    grpc: RecordingGrpcAuthz | None
    http: RecordingServer | None

    def check_count(self) -> int:
        return len(self.grpc.checks) if self.grpc else len(self.http_checks().checks)

    def http_checks(self) -> RecordingServer:
        assert self.http is not None, "a gRPC-mode observer"
        return self.http


@contextlib.contextmanager
def observing(mode: str, pack_as_bytes: bool | None = None) -> Iterator[Observer]:
    workdir = Path(tempfile.mkdtemp(prefix="observe-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        upstream = stack.enter_context(EchoUpstream())
        grpc_authz, http_authz = None, None
        if mode == "grpc":
            grpc_authz = stack.enter_context(RecordingGrpcAuthz().serving())
            authz_addr = grpc_authz.addr
        else:
            http_authz = stack.enter_context(recording_http_authz())
            authz_addr = f"127.0.0.1:{http_authz.server_address[1]}"
        config = shipped_config(mode, upstream.addr, authz_addr, pack_as_bytes)
        envoy = start_envoy(config, workdir)
        stack.callback(envoy.stop)
        yield Observer(mode, envoy, upstream, grpc_authz, http_authz)


def _row(observer: Observer, case: Case, size: int) -> str:
    body = bytes(ord("a") + i % 26 for i in range(size))
    assert observer.upstream is not None
    checks_before, received_before = observer.check_count(), len(observer.upstream.received)
    reply = case.send(observer.envoy.port, body)
    time.sleep(0.05)
    received = observer.upstream.received[received_before:]
    upstream_bytes = str(received[0]["body_bytes"]) if received else f"none ({reply.status})"
    if observer.grpc:
        [check] = observer.grpc.checks[checks_before:]
        http = check.attributes.request.http
        carried = len(http.raw_body) or len(http.body.encode())
        partial = http.headers.get("x-envoy-auth-partial-body", "absent")
        length = http.headers.get("content-length", "absent")
        framing = f"size {http.size}, content-length {length}"
    else:
        [raw] = observer.http_checks().checks[checks_before:]
        carried = len(raw.body)
        partial = raw.header("x-envoy-auth-partial-body") or "absent"
        te = raw.header("transfer-encoding")
        framing = f"content-length {raw.header('content-length')}" + (
            f", transfer-encoding {te}" if te else ""
        )
    return (
        f"| {observer.mode} | {case.name} | {size} | {carried} | {partial} | {framing} | {upstream_bytes} |"
    )


def body_table() -> list[str]:
    lines = [
        "| mode | client framing | body | check carried | partial-body | check's framing | upstream got |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("grpc", "http"):
        with observing(mode) as observer:
            for case in cases_for(mode):
                for size in SIZES:
                    lines.append(_row(observer, case, size))
    return lines


# Header values and bodies outside UTF-8: what the check carries, what the upstream gets.
ODD_HEADERS = (
    ("x-latin", b"caf\xe9"),  # one byte 0x80-0xFF: latin-1, not UTF-8
    ("x-broken", b"\xff\xfe\xc3("),  # never UTF-8
    ("x-utf8", b"\xc3\xa9t\xc3\xa9"),  # valid UTF-8, for contrast
    ("x-bang", b"caf!"),  # what Envoy's replacement looks like
)
ODD_BODIES = (b'{"a":"\xe9"}', b'{"a":"\xc3\xa9"}')


@contextlib.contextmanager
def _byte_observer(mode: str, pack_as_bytes: bool | None) -> Iterator[tuple[Observer, RecordingServer]]:
    """Like `observing`, but the upstream keeps the exact bytes of every header and body."""
    workdir = Path(tempfile.mkdtemp(prefix="observe-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        upstream = stack.enter_context(recording_http_authz())
        upstream_addr = f"127.0.0.1:{upstream.server_address[1]}"
        grpc_authz, http_authz = None, None
        if mode == "grpc":
            grpc_authz = stack.enter_context(RecordingGrpcAuthz().serving())
            authz_addr = grpc_authz.addr
        else:
            http_authz = stack.enter_context(recording_http_authz())
            authz_addr = f"127.0.0.1:{http_authz.server_address[1]}"
        config = shipped_config(mode, upstream_addr, authz_addr, pack_as_bytes)
        envoy = start_envoy(config, workdir)
        stack.callback(envoy.stop)
        yield Observer(mode, envoy, None, grpc_authz, http_authz), upstream


def bytes_table() -> list[str]:
    lines = ["| mode | what | client sent | check carried | upstream got |", "|---|---|---|---|---|"]
    for mode, pack in (("grpc", False), ("grpc", True), ("http", None)):
        label = f"gRPC, pack_as_bytes {str(pack).lower()}" if mode == "grpc" else "HTTP"
        with _byte_observer(mode, pack) as (observer, upstream):
            head = b"GET /h HTTP/1.1\r\nhost: t" + b"".join(
                b"\r\n%s: %s" % (name.encode(), value) for name, value in ODD_HEADERS
            )
            h1_request(observer.envoy.port, head)
            for body in ODD_BODIES:
                post = b"POST /b HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: %d"
                h1_request(observer.envoy.port, post % len(body), [body])
            time.sleep(0.05)
            sent_headers = dict(upstream.raw_values[0])
            for name, value in ODD_HEADERS:
                if observer.grpc:
                    in_check = observer.grpc.checks[0].attributes.request.http.headers[name].encode()
                else:
                    in_check = dict(observer.http_checks().raw_values[0])[name]
                lines.append(
                    f"| {label} | header {name} | `{value!r}` | `{in_check!r}` | `{sent_headers[name]!r}` |"
                )
            for index, body in enumerate(ODD_BODIES, start=1):
                if observer.grpc:
                    http = observer.grpc.checks[index].attributes.request.http
                    carried = (
                        f"raw_body `{http.raw_body!r}`" if http.raw_body else f"body `{http.body.encode()!r}`"
                    )
                else:
                    carried = f"`{observer.http_checks().checks[index].body!r}`"
                got = upstream.checks[index].body
                lines.append(f"| {label} | body | `{body!r}` | {carried} | `{got!r}` |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", action="store_true", help="header and body bytes outside UTF-8")
    args = parser.parse_args(argv)
    for line in bytes_table() if args.bytes else body_table():
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
