"""What only the real `opa run --server` does, through the sidecar: decision ids from its
decision log, and built-in errors that are lenient unless asked to be strict.

The stand-in has neither (tests/opa_server/README.md), so these cases exist only when a real
`opa` does (`scripts/install-opa.sh` builds it).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from sidecar.envoy.response import OK, PERMISSION_DENIED
from tests.check_requests import check_request
from tests.fixtures.opa import OpaProcess, opa_binary, start_opa
from tests.fixtures.sidecar import running_sidecar

POLICY = """package realopa

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"

# to_number of a word is a built-in error: undefined when lenient, a 500 when strict.
default number := {"allowed": false, "http_status": 429}

number := {"allowed": true} if to_number(input.attributes.request.http.headers["x-n"]) > 0
"""

if opa_binary():

    @pytest.fixture(scope="module")
    def logging_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaProcess]:
        policy = tmp_path_factory.mktemp("real-opa") / "realopa.rego"
        policy.write_text(POLICY)
        options = ["--set=decision_logs.console=true", "--log-level=info", "--log-format=json"]
        opa = start_opa([policy], real_opa_options=options)
        yield opa
        opa.stop()

    def console_decisions(opa: OpaProcess) -> list[dict[str, object]]:
        lines = (json.loads(line) for line in opa.log().splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("msg") == "Decision Log"]

    async def test_opa_decision_id_reaches_the_decision_log(logging_opa: OpaProcess) -> None:
        async with running_sidecar(
            logging_opa.url, decision_path="realopa/allow", opa_timeout=2.0
        ) as sidecar:
            allowed = await sidecar.check(check_request("GET", "/x"), timeout=5.0)
            denied = await sidecar.check(check_request("POST", "/x"), timeout=5.0)
            entries = sidecar.decisions()
        assert (allowed.status.code, denied.status.code) == (OK, PERMISSION_DENIED)
        ids = [entry["opa_decision_id"] for entry in entries]
        assert [uuid.UUID(str(i)).version for i in ids] == [4, 4]
        deadline = time.monotonic() + 5
        while {*ids} - {d.get("decision_id") for d in console_decisions(logging_opa)}:
            assert time.monotonic() < deadline, f"OPA never logged decisions {ids}:\n{logging_opa.log()}"
            time.sleep(0.05)

    @pytest.mark.parametrize(
        ("strict", "status", "reason"),
        [(True, PERMISSION_DENIED, "opa_http_status"), (False, PERMISSION_DENIED, "policy_denied")],
        ids=["strict", "lenient"],
    )
    async def test_builtin_error_is_a_500_only_when_strict(
        logging_opa: OpaProcess, strict: bool, status: int, reason: str
    ) -> None:
        request = check_request(headers={"x-n": "many"})
        async with running_sidecar(
            logging_opa.url, decision_path="realopa/number", opa_timeout=2.0, strict_builtin_errors=strict
        ) as sidecar:
            response = await sidecar.check(request, timeout=5.0)
            [entry] = sidecar.decisions()
        assert response.status.code == status
        assert entry["reason"] == reason
        # Lenient: the expression is undefined, so the policy's default answers, status and all.
        assert response.denied_response.status.code == (403 if strict else 429)

    async def test_a_number_passes_in_both_modes(logging_opa: OpaProcess) -> None:
        for strict in (True, False):
            async with running_sidecar(
                logging_opa.url, decision_path="realopa/number", opa_timeout=2.0, strict_builtin_errors=strict
            ) as sidecar:
                response = await sidecar.check(check_request(headers={"x-n": "7"}), timeout=5.0)
            assert response.status.code == OK
