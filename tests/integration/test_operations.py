"""Metrics after known traffic, and decision logs that keep secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sidecar.decision_log import DecisionLog
from sidecar.masking import MASK, Masker
from sidecar.signals import parse_pointers
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import running_sidecar

SECRETS = (
    "Bearer eyJsecret-token",
    "session=cookie-secret-42",
    "hunter2-password",
    "key-abc-999",
    "qs-token-777",
)


def secret_request() -> Any:
    return check_request(
        "POST",
        "/login?access_token=qs-token-777&page=1",
        headers={
            "authorization": "Bearer eyJsecret-token",
            "cookie": "session=cookie-secret-42",
            "x-api-key": "key-abc-999",
            "content-type": "application/json",
        },
        body='{"user": "alice", "password": "hunter2-password"}',
    )


def scrape(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_metrics_count_outcomes_and_reasons(fault_opa: FaultOpa) -> None:
    answers = iter(
        [Behaviour.json({"result": True})] * 3
        + [Behaviour.json({"result": False})] * 2
        + [Behaviour.json({})]
    )
    fault_opa.set(lambda _request: next(answers))
    async with running_sidecar(fault_opa.url) as sidecar:
        for _ in range(6):
            await sidecar.check(check_request())
        await sidecar.check(check_request("GET", "/%zz"))  # bad_request: OPA not asked
        port = sidecar.sidecar.probes.port
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            samples = scrape(await resp.text())
    assert samples['opa_sidecar_checks_total{outcome="allow",reason=""}'] == 3
    assert samples['opa_sidecar_checks_total{outcome="deny",reason="policy_denied"}'] == 2
    assert samples['opa_sidecar_checks_total{outcome="deny",reason="undefined"}'] == 1
    assert samples['opa_sidecar_checks_total{outcome="deny",reason="bad_request"}'] == 1
    assert samples['opa_sidecar_checks_total{outcome="deny",reason="opa_timeout"}'] == 0  # exists at 0
    assert samples['opa_sidecar_check_duration_seconds_count{outcome="allow"}'] == 3
    assert samples['opa_sidecar_check_duration_seconds_count{outcome="deny"}'] == 4
    assert samples["opa_sidecar_opa_request_duration_seconds_count"] == 6
    assert samples["opa_sidecar_checks_in_flight"] == 0
    assert samples["opa_sidecar_opa_reachable"] == 1


async def test_opa_reachable_drops_when_opa_is_gone(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.close_early())
    async with running_sidecar(fault_opa.url) as sidecar:
        await sidecar.check(check_request())
        assert sidecar.sidecar.metrics.opa_reachable._value.get() == 0


async def test_health_endpoints(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url) as sidecar, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{sidecar.sidecar.probes.port}"
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(base + "/readyz") as resp:
            assert (resp.status, (await resp.json())["status"]) == (200, "ready")
        async with http.get(base + "/nothing") as resp:
            assert resp.status == 404


async def test_secrets_never_reach_the_log_even_with_log_input(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.json({"result": False}))
    pointers = parse_pointers(["/parsed_body/password", "/parsed_query/access_token"])
    async with running_sidecar(fault_opa.url, log_input=True, mask_pointers=pointers) as sidecar:
        await sidecar.check(secret_request())
        sidecar.sidecar.decisions.flush()  # lines are written by a thread of their own
        text = sidecar.log.getvalue().decode()
    for secret in SECRETS:
        assert secret not in text
    [entry] = [json.loads(line) for line in text.splitlines()]
    logged = entry["input"]
    headers = logged["attributes"]["request"]["http"]["headers"]
    assert headers["authorization"] == headers["cookie"] == headers["x-api-key"] == MASK
    assert headers["content-type"] == "application/json"  # other headers kept
    assert logged["parsed_body"] == {"user": "alice", "password": MASK}
    assert logged["parsed_query"] == {"access_token": [MASK], "page": ["1"]}
    assert logged["attributes"]["request"]["http"]["body"] == MASK
    assert logged["attributes"]["request"]["http"]["path"] == f"/login?access_token={MASK}&page=1"
    assert entry["path"] == "/login"


async def test_default_log_has_no_input_no_query_and_no_headers(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url) as sidecar:
        await sidecar.check(secret_request())
        [entry] = sidecar.decisions()
    for secret in SECRETS:
        assert secret not in json.dumps(entry)
    assert set(entry) >= {
        "time",
        "decision_id",
        "outcome",
        "latency_ms",
        "decision_path",
        "method",
        "host",
        "path",
    }
    assert "input" not in entry


def test_extra_masked_headers_and_json_pointers() -> None:
    doc: dict[str, Any] = {
        "attributes": {"request": {"http": {"headers": {"x-vault-token": "s.abc", "x-other": "keep"}}}},
        "parsed_body": {"items": [{"secret": "a"}, {"secret": "b"}]},
    }
    masked = Masker(["X-Vault-Token"], parse_pointers(["/parsed_body/items/1/secret", "/absent/path"])).mask(
        doc
    )
    assert masked["attributes"]["request"]["http"]["headers"] == {"x-vault-token": MASK, "x-other": "keep"}
    assert masked["parsed_body"]["items"] == [{"secret": "a"}, {"secret": MASK}]
    assert doc["parsed_body"]["items"][1]["secret"] == "b"  # the original is untouched


async def test_decision_log_file(fault_opa: FaultOpa, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog.open(str(path), "envoy/authz/allow")
    async with running_sidecar(fault_opa.url) as sidecar:
        sidecar.sidecar.recorder._decisions = log
        await sidecar.check(check_request())
    log.close()
    [line] = path.read_bytes().splitlines()
    assert orjson.loads(line)["outcome"] == "allow"


async def test_exception_logs_carry_no_message(
    fault_opa: FaultOpa, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def leak(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("Bearer eyJsecret-token")

    monkeypatch.setattr("sidecar.authorizer.build_input", leak)
    caplog.set_level(logging.DEBUG)
    async with running_sidecar(fault_opa.url) as sidecar:
        response = await sidecar.check(secret_request())
        decisions = sidecar.decisions()
    assert response.status.code == 7
    assert "ValueError" in caplog.text
    assert "eyJsecret" not in caplog.text
    assert "eyJsecret" not in json.dumps(decisions)
