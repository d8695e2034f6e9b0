"""Deny memory through real Envoy (the shipped configuration) with agent-like
clients: a retry loop, a credential rotated after a deny, the same caller on
another route, another caller, a window that ends, a full memory, two replicas
sharing one store and two workers.

The caller is the `x-agent-id` header here, as a gateway in front of Envoy
would set it; in a mesh it is the peer principal (the default pointer).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from deploy.local_stack import free_port, start_sidecar
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from tests.check_requests import check_request
from tests.e2e.stack import Stack, running_stack, wait_for
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.redis_server import running_redis

CALLER = ("--caller", "/attributes/request/http/headers/x-agent-id")
KEY = "0123456789abcdef0123456789abcdef"


def admin_is_denied(request: RecordedRequest) -> Behaviour:
    if not request.path.startswith("/v1/data/"):
        return Behaviour.json({})  # the readiness probe's GET /health
    path = request.json()["input"]["attributes"]["request"]["http"]["path"]
    return Behaviour.json({"result": not path.startswith("/admin")})


FIRST_TOKEN = "Bearer one"


def asked(opa: FaultOpa) -> int:
    """Policy decisions OPA was asked for."""
    return sum(r.path.startswith("/v1/data/") for r in opa.requests)


def call(stack: Stack, path: str, agent: str = "coder", token: str = FIRST_TOKEN) -> int:
    return stack.envoy.request("GET", path, headers={"x-agent-id": agent, "authorization": token}).status


def reasons(stack: Stack, count: int) -> list[str]:
    """The deny reasons (or allow) of the first `count` decisions, once they are logged."""
    entries = wait_for(lambda: d if len(d := stack.sidecar.decisions()) >= count else None)
    return [e.get("reason", "allow") for e in entries[:count]]


@contextlib.contextmanager
def memory_stack(opa: FaultOpa, *args: str) -> Iterator[Stack]:
    opa.set(admin_is_denied)
    with running_stack(opa.url, sidecar_args=("--deny-memory", "30", *CALLER, *args)) as stack:
        yield stack


def test_an_agent_retrying_rotating_and_rerouting(fault_opa: FaultOpa) -> None:
    with memory_stack(fault_opa, "--deny-memory", "1.5") as stack:
        retry_loop = [call(stack, "/admin/delete") for _ in range(5)]
        rotated = call(stack, "/admin/delete", token="Bearer stolen")
        rotated_elsewhere = call(stack, "/orders", token="Bearer stolen")
        other_route = call(stack, "/orders")
        other_agent = [
            call(stack, "/orders", agent="reviewer"),
            call(stack, "/admin/delete", agent="reviewer"),
        ]
        seen = reasons(stack, 10)
        access = wait_for(lambda: a if len(a := stack.envoy.access_log()) >= 10 else None)
        time.sleep(1.6)  # the window ends: the agent is asked about again
        after_window = [call(stack, "/orders", token="Bearer stolen"), call(stack, "/admin/delete")]
        later = reasons(stack, 12)[10:]
        upstream_paths = [r["path"] for r in stack.upstream.received]
    assert retry_loop == [403] * 5
    assert seen[:5] == ["policy_denied"] + ["held_after_deny"] * 4
    assert (rotated, rotated_elsewhere) == (403, 403)
    assert seen[5:7] == ["credential_switch", "credential_switch"]
    assert (other_route, seen[7]) == (200, "allow")
    assert other_agent == [200, 403] and seen[8:10] == ["allow", "policy_denied"]
    assert [a["authz_deny_reason"] for a in access[1:5]] == ["held_after_deny"] * 4
    assert after_window == [200, 403] and later == ["allow", "policy_denied"]
    assert not any(p.startswith("/admin") for p in upstream_paths)
    # OPA heard the first deny, the two allowed calls, the other agent and the two after the window.
    assert asked(fault_opa) == 6


def test_a_full_memory_asks_again_and_never_allows_a_denied_call(fault_opa: FaultOpa) -> None:
    # Two entries: room for one remembered deny.
    with memory_stack(fault_opa, "--deny-memory-capacity", "2") as stack:
        statuses = [call(stack, "/admin", agent=a) for a in ("a", "a", "b", "a", "b")]
        seen = reasons(stack, 5)
        metrics = stack.sidecar.log()  # keep the process log for a failure report
    assert statuses == [403] * 5, metrics
    # b's deny pushed a out; a is asked again (and denied again by the policy), then b is.
    assert seen == ["policy_denied", "held_after_deny", "policy_denied", "policy_denied", "policy_denied"]


def test_two_replicas_share_one_store(fault_opa: FaultOpa, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    with running_redis() as redis:
        shared = ("--deny-memory-store", redis.url, "--deny-memory-key-file", str(key))
        with memory_stack(fault_opa, *shared) as one, memory_stack(fault_opa, *shared) as two:
            first = call(one, "/admin")
            retried_on_other_replica = call(two, "/admin")
            rotated_on_other_replica = call(two, "/orders", token="Bearer two")
            assert reasons(one, 1) == ["policy_denied"]
            assert reasons(two, 2) == ["held_after_deny", "credential_switch"]
            held = two.sidecar.decisions()[0]
            assert held["earlier_decision_id"] == one.sidecar.decisions()[0]["decision_id"]
    assert (first, retried_on_other_replica, rotated_on_other_replica) == (403, 403, 403)
    assert asked(fault_opa) == 1


def _check(target: str, path: str) -> CheckResponse:
    with grpc.insecure_channel(target) as channel:  # a connection of its own: any worker may take it
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        request = check_request("GET", path, headers={"x-agent-id": "coder", "authorization": "Bearer one"})
        response: CheckResponse = stub.Check(request, timeout=2.0)
        return response


def test_two_workers_share_the_memory_through_the_store(fault_opa: FaultOpa, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    fault_opa.set(admin_is_denied)
    with running_redis() as redis:
        args = ["--workers", "2", "--probe-addr", f"127.0.0.1:{free_port()}", "--deny-memory", "30", *CALLER]
        args += ["--deny-memory-store", redis.url, "--deny-memory-key-file", str(key)]
        sidecar = start_sidecar(fault_opa.url, tmp_path, http_addr="127.0.0.1:0", extra_args=args)
        try:
            first = _check(sidecar.grpc_addr, "/admin")
            retries = [_check(sidecar.grpc_addr, "/admin") for _ in range(12)]
        finally:
            sidecar.stop()
    assert first.dynamic_metadata["deny_reason"] == "policy_denied"
    assert {r.dynamic_metadata["deny_reason"] for r in retries} == {"held_after_deny"}
    assert asked(fault_opa) == 1
