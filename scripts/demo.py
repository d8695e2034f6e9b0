"""A guided tour of opa-sidecar on this machine, no Docker needed (`make demo`).

Starts OPA (the real `opa` that scripts/install-opa.sh builds, or one on PATH; else the
OPA test server on the OPA engine) serving rego/ with the demo's routes (scripts/demo_data.json), the sidecar,
a demo application and Envoy with the configuration of deploy/envoy/, then sends an
allowed request, a denied one, and one while OPA is stopped, printing the curl
command for each.

    python -m scripts.demo              # the tour, then keeps running for you to curl; Ctrl-C stops
    python -m scripts.demo --once       # the tour, then exit: 0 if every step went as expected
    python -m scripts.demo --port 8000  # Envoy's port (default 10000; 0 picks a free one)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import (
    EnvoyProcess,
    Response,
    SidecarProcess,
    StartError,
    local_addresses,
    start_envoy,
    start_sidecar,
)
from deploy.render import REPO_ROOT, render_envoy
from tests.fixtures.opa import OpaProcess, OpaStartError, opa_binary, start_opa

REGO_DIR = REPO_ROOT / "rego"
# The demo's own routes; rego/ as shipped denies everything until configured.
DEMO_DATA = Path(__file__).with_name("demo_data.json")
EXIT_OK, EXIT_UNEXPECTED, EXIT_CANNOT_START = 0, 1, 2


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text} " + "=" * max(0, 70 - len(text)))


@dataclass
class Demo:
    """The running pieces, and how to restart OPA at the same address."""

    workdir: Path
    upstream: EchoUpstream
    opa: OpaProcess
    sidecar: SidecarProcess
    envoy: EnvoyProcess
    opa_socket: Path
    outcomes: list[bool] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy.port}"

    def curl(self, path: str, headers: dict[str, str] | None = None) -> str:
        flags = "".join(f" -H {shlex.quote(f'{k}: {v}')}" for k, v in (headers or {}).items())
        return f"curl -i{flags} {self.base_url}{path}"

    def send(self, path: str, headers: dict[str, str] | None = None) -> tuple[Response, bool]:
        """GET through Envoy; also says whether the application received it."""
        say(f"  $ {self.curl(path, headers)}")
        seen = len(self.upstream.received)
        response = self.envoy.request("GET", path, headers=headers)
        return response, len(self.upstream.received) > seen

    def decision(self, path: str, wait: float = 2.0) -> dict[str, Any]:
        """The sidecar's latest decision for `path`; its log line may land just after Envoy's
        answer (a fast deny, such as OPA refusing the connection, can beat the log writer)."""
        deadline = time.monotonic() + wait
        while True:
            entries = [d for d in self.sidecar.decisions() if d.get("path") == path.partition("?")[0]]
            if entries or time.monotonic() > deadline:
                return entries[-1] if entries else {}
            time.sleep(0.02)

    def expect(self, ok: bool, good: str, bad: str) -> None:
        self.outcomes.append(ok)
        say(f"  {'OK' if ok else 'UNEXPECTED'}: {good if ok else bad}")

    def stop_opa(self) -> None:
        self.opa.stop()

    def restart_opa(self) -> None:
        self.opa_socket.unlink(missing_ok=True)
        self.opa = start_ready_opa(self.opa_socket)


def start_ready_opa(socket_path: Path) -> OpaProcess:
    """OPA serving rego/ and the demo's routes, after one evaluation: the first one compiles
    the policy and can take longer than the sidecar's 150 ms budget, which would make the
    tour's first step a timeout deny rather than the policy's answer."""
    opa = start_opa([REGO_DIR, DEMO_DATA], unix_socket=socket_path)
    opa.request("POST", "/v1/data/envoy/authz/allow", body=json.dumps({"input": {}}))
    return opa


def show_response(response: Response, decision: dict[str, Any], reached: bool) -> None:
    if reached:
        say(f"  HTTP {response.status}, from the application (its echo of the request)")
    else:
        body = response.text.strip().splitlines()[0] if response.text.strip() else "(empty body)"
        say(f"  HTTP {response.status}, from Envoy: {body[:100]}")
    if decision:
        reason = f", reason {decision['reason']}" if decision.get("reason") else ""
        say(f"  sidecar decision: {decision['outcome']}{reason} (decision id {decision['decision_id']})")


def tour(demo: Demo) -> None:
    heading("1. An allowed request")
    say("The demo's routes (scripts/demo_data.json) let anyone GET /public/...; Envoy")
    say("forwards the request, with the headers the policy added, to the application")
    say("(it echoes what it got).")
    response, reached = demo.send("/public/hello")
    show_response(response, demo.decision("/public/hello"), reached)
    added = {
        name: values[0]
        for name, values in (response.json().get("headers", {}) if reached else {}).items()
        if name.startswith("x-authz") or name.startswith("x-auth-")
    }
    shown = ", ".join(f"{name}: {value}" for name, value in added.items())
    demo.expect(
        response.status == 200 and reached,
        "allowed; the application received it" + (f", with {shown}" if shown else ""),
        "expected a 200 from the application",
    )

    heading("2. A denied request")
    say("Without a credential, the policy denies everything outside /public. The sidecar")
    say("answers Envoy with the policy's status and body; the application never sees it.")
    response, reached = demo.send("/api/orders")
    show_response(response, demo.decision("/api/orders"), reached)
    demo.expect(
        400 <= response.status < 500 and not reached,
        f"denied with {response.status} before reaching the application",
        "expected a 4xx from the policy, and nothing at the application",
    )

    heading("3. OPA is down")
    say("Stopping OPA. The sidecar cannot ask, so it denies: 403, reason opa_unreachable.")
    say("It does so with a real deny, which Envoy enforces even if it were set to fail open.")
    demo.stop_opa()
    response, reached = demo.send("/public/while-opa-is-down")
    decision = demo.decision("/public/while-opa-is-down")
    show_response(response, decision, reached)
    demo.expect(
        response.status == 403 and not reached and decision.get("reason") == "opa_unreachable",
        "denied while OPA is down, though the policy would allow this path",
        "expected a 403 (opa_unreachable)",
    )

    heading("4. OPA is back")
    demo.restart_opa()
    say("OPA restarted; the next check asks it again (no cache, no retries).")
    response, reached = demo.send("/public/hello-again")
    show_response(response, demo.decision("/public/hello-again"), reached)
    demo.expect(response.status == 200 and reached, "allowed again", "expected a 200 once OPA is back")


def print_try_it(demo: Demo) -> None:
    heading("Your turn")
    say(f"Envoy listens on {demo.base_url}. Try:")
    say(f"  {demo.curl('/public/anything')}")
    say(f"  {demo.curl('/api/orders')}")
    say(f"  curl -s http://127.0.0.1:{demo.envoy.admin_port}/stats | grep ext_authz   # Envoy's counters")
    say("Logs, one JSON line a request or decision (removed when the demo stops):")
    say(f"  Envoy access log:      {demo.envoy.logs['stdout']}")
    say(f"  sidecar decision log:  {demo.sidecar.logs['stdout']}")
    say("Edit rego/ and re-run `make demo` to try your own policy. Ctrl-C stops everything.")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def running_demo(port: int) -> Iterator[Demo]:
    workdir = Path(tempfile.mkdtemp(prefix="opa-sidecar-demo-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        heading("Starting")
        opa_socket = workdir / "opa.sock"
        opa = start_ready_opa(opa_socket)
        binary = opa_binary()
        which = f"opa ({binary})" if binary else "the OPA test server (python -m tests.opa_server)"
        say(f"  OPA:          {which} serving rego/ and scripts/demo_data.json on {opa.url}")
        upstream = cleanup.enter_context(EchoUpstream())
        say(f"  application:  deploy/echo_upstream.py on {upstream.addr}")
        sidecar = start_sidecar(opa.url, workdir)
        cleanup.callback(sidecar.stop)
        say(f"  opa-sidecar:  python -m sidecar serve --opa-url {opa.url} --grpc-addr {sidecar.grpc_addr}")
        addresses = local_addresses(upstream.addr, sidecar.grpc_addr, listen=f"127.0.0.1:{port}")
        envoy = start_envoy(render_envoy(addresses), workdir)
        cleanup.callback(envoy.stop)
        say(f"  Envoy:        sidecar/envoy/templates/envoy.yaml on 127.0.0.1:{envoy.port}")
        demo = Demo(workdir, upstream, opa, sidecar, envoy, opa_socket)
        cleanup.callback(lambda: demo.opa.stop())
        yield demo


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str] | None = None, wait: Callable[[], None] = wait_for_signal) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="run the tour and exit (0: all as expected)")
    parser.add_argument("--port", type=int, default=10000, help="Envoy's port (default %(default)s)")
    args = parser.parse_args(argv)
    if args.port and not port_is_free(args.port):
        say(f"Port {args.port} is taken; choose another: python -m scripts.demo --port {args.port + 1}")
        return EXIT_CANNOT_START
    try:
        with running_demo(args.port) as demo:
            tour(demo)
            passed = all(demo.outcomes)
            heading("Result")
            say(f"{sum(demo.outcomes)} of {len(demo.outcomes)} steps as expected.")
            if args.once:
                return EXIT_OK if passed else EXIT_UNEXPECTED
            print_try_it(demo)
            wait()
            say("\nStopping.")
            return EXIT_OK if passed else EXIT_UNEXPECTED
    except (StartError, OpaStartError, json.JSONDecodeError) as exc:
        say(f"Could not run the demo: {exc}")
        return EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
