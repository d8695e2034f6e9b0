"""gRPC calls through a real Envoy (the shipped configuration, pack_as_bytes) to the
sidecar with --proto-descriptor and on to a real gRPC server: the policy reads the
request message in parsed_body, and a call it could not see whole never reaches the
server."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from deploy.local_stack import EnvoyProcess, SidecarProcess, local_addresses, start_envoy, start_sidecar
from deploy.render import render_envoy
from tests.e2e.stack import wait_for
from tests.fault_opa import FaultOpa
from tests.fixtures.grpc_messages import PLACE, Messages, write_descriptor_set

RECEIPT = b"\x08\x01"  # Receipt{accepted: true}


@dataclass
class GrpcApp:
    """A gRPC server of shop.v1.Orders that records the request messages it decoded;
    Cancel is served too, so the descriptor set alone decides that it is unknown."""

    calls: list[tuple[str, list[bytes]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, method: str, messages: list[bytes]) -> bytes:
        with self.lock:
            self.calls.append((f"/shop.v1.Orders/{method}", messages))
        return RECEIPT

    def handlers(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(
            "shop.v1.Orders",
            {
                name: grpc.unary_unary_rpc_method_handler(
                    lambda request, _context, name=name: self._record(name, [request])
                )
                for name in ("Place", "Cancel")
            }
            | {
                "Upload": grpc.stream_unary_rpc_method_handler(
                    lambda requests, _context: self._record("Upload", list(requests))
                )
            },
        )


@dataclass
class GrpcStack:
    app: GrpcApp
    sidecar: SidecarProcess
    envoy: EnvoyProcess
    channel: grpc.Channel
    messages: Messages

    def call(self, path: str, request: bytes, **kwargs: Any) -> bytes:
        method = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        response: bytes = method(request, timeout=5.0, **kwargs)
        return response

    def deny_after(self, seen: int, path: str) -> dict[str, Any]:
        """The decision log entry of the first deny of ``path`` after the first ``seen`` entries."""
        found: dict[str, Any] = wait_for(
            lambda: next(
                (
                    d
                    for d in self.sidecar.decisions()[seen:]
                    if d.get("path") == path and d.get("outcome") == "deny"
                ),
                None,
            )
        )
        return found


def _grpc_upstream(config_yaml: str) -> str:
    """The shipped configuration with the application cluster spoken to in HTTP/2, as gRPC needs."""
    config = yaml.safe_load(config_yaml)
    [app] = [c for c in config["static_resources"]["clusters"] if c["name"] == "app"]
    app["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def grpc_stack(_fault_opa_session: FaultOpa) -> Iterator[GrpcStack]:
    workdir = Path(tempfile.mkdtemp(prefix="e2e-grpc-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        descriptor_set = write_descriptor_set(workdir)
        app = GrpcApp()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((app.handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        cleanup.callback(server.stop, None)
        sidecar = start_sidecar(
            _fault_opa_session.url, workdir, extra_args=["--proto-descriptor", str(descriptor_set)]
        )
        cleanup.callback(sidecar.stop)
        config = render_envoy(local_addresses(f"127.0.0.1:{port}", sidecar.grpc_addr))
        envoy = start_envoy(_grpc_upstream(config), workdir)
        cleanup.callback(envoy.stop)
        channel = grpc.insecure_channel(f"127.0.0.1:{envoy.port}")
        cleanup.callback(channel.close)
        yield GrpcStack(app, sidecar, envoy, channel, Messages(descriptor_set))


@pytest.fixture
def stack(grpc_stack: GrpcStack, fault_opa: FaultOpa) -> GrpcStack:
    with grpc_stack.app.lock:
        grpc_stack.app.calls.clear()
    return grpc_stack


def _inputs(fault_opa: FaultOpa) -> list[dict[str, Any]]:
    return [r.json()["input"] for r in fault_opa.requests]


def test_the_policy_reads_the_request_message(stack: GrpcStack, fault_opa: FaultOpa) -> None:
    message = stack.messages.new("shop.v1.Order", order_id="o-7", total_cents=2**40, kind=1, token=b"\xff")
    message.lines.add(sku="a", quantity=2)
    payload = message.SerializeToString()
    assert stack.call(PLACE, payload) == RECEIPT
    assert stack.app.calls == [(PLACE, [payload])]
    [seen] = _inputs(fault_opa)
    assert seen["parsed_path"] == ["shop.v1.Orders", "Place"]
    assert seen["parsed_body"] == {
        "orderId": "o-7",
        "totalCents": str(2**40),
        "kind": "KIND_BOOK",
        "token": "/w==",
        "lines": [{"sku": "a", "quantity": "2"}],
    }
    assert seen["truncated_body"] is False
    assert seen["attributes"]["request"]["http"]["headers"]["content-type"] == "application/grpc"


def _refused(stack: GrpcStack, fault_opa: FaultOpa, path: str, call: Any, detail: str) -> None:
    before = len(stack.sidecar.decisions())
    with pytest.raises(grpc.RpcError) as info:
        call()
    # Envoy answers a gRPC call's 400 deny with the gRPC status its HTTP status maps to.
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert stack.app.calls == [], "the server never sees the call"
    assert fault_opa.count == 0, "the policy is not asked"
    decision = stack.deny_after(before, path)
    assert (decision["reason"], decision["http_status"]) == ("bad_request", 400)
    assert detail in decision["detail"]


def test_a_compressed_call_is_refused(stack: GrpcStack, fault_opa: FaultOpa) -> None:
    payload = stack.messages.new("shop.v1.Order", order_id="z" * 200).SerializeToString()
    call = lambda: stack.call(PLACE, payload, compression=grpc.Compression.Gzip)  # noqa: E731
    _refused(stack, fault_opa, PLACE, call, "grpc-encoding")


def test_a_client_stream_is_refused(stack: GrpcStack, fault_opa: FaultOpa) -> None:
    path = "/shop.v1.Orders/Upload"
    upload = stack.channel.stream_unary(path, request_serializer=None, response_deserializer=None)
    parts = [stack.messages.new("shop.v1.Order", small=n).SerializeToString() for n in (1, 2)]
    _refused(stack, fault_opa, path, lambda: upload(iter(parts), timeout=5.0), "is streaming")


def test_a_method_not_in_the_set_is_refused(stack: GrpcStack, fault_opa: FaultOpa) -> None:
    path = "/shop.v1.Orders/Cancel"
    _refused(stack, fault_opa, path, lambda: stack.call(path, b"\x20\x01"), "names no method")


def test_a_field_the_set_does_not_describe_is_refused(stack: GrpcStack, fault_opa: FaultOpa) -> None:
    # What a newer client writes: field 100, which this descriptor set does not know.
    newer = stack.messages.new("shop.v1.Order", small=1).SerializeToString() + b"\xa0\x06\x01"
    _refused(stack, fault_opa, PLACE, lambda: stack.call(PLACE, newer), "does not describe")


def test_a_message_longer_than_envoys_buffer_reaches_the_policy_as_truncated(
    stack: GrpcStack, fault_opa: FaultOpa
) -> None:
    payload = stack.messages.new("shop.v1.Order", order_id="x" * 9000).SerializeToString()
    assert stack.call(PLACE, payload) == RECEIPT  # the stand-in OPA allows
    [seen] = _inputs(fault_opa)
    assert (seen["parsed_body"], seen["truncated_body"]) == (None, True)
    assert stack.app.calls == [(PLACE, [payload])]
