"""The property of the differential test, for one request: it was refused (the upstream never
saw it), or it was allowed and every field of the OPA input that describes it equals what the
upstream received and what each application parser made of it.

`judge()` returns a `Judgement`: the outcome, the refusal reason, and every mismatch found
(an empty list is a pass)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Final

from tests.differential.parsing_upstream import FORM, JSON, MULTIPART, ParserView, UpstreamRecord
from tests.differential.strategies import WireRequest

REFUSAL_STATUSES: Final = frozenset({400, 403, 413})
# Envoy's own answer to an escaped slash in the path (UNESCAPE_AND_REDIRECT), before any check.
ENVOY_REDIRECT: Final = 307
# status_on_error of the shipped configurations: the check got no answer in time (a loaded
# machine); closed, and no view was handed to anyone.
ENVOY_CHECK_ERROR: Final = 503
# Headers a hop writes after the check, or that carry framing Envoy redoes for each hop.
_AFTER_THE_CHECK: Final = frozenset({"x-envoy-expected-rq-timeout-ms", "transfer-encoding"})
# Envoy's own signal to the check, never forwarded upstream.
_CHECK_ONLY: Final = frozenset({"x-envoy-auth-partial-body"})
# Which body kinds each dispatching library claims; a library silent on a kind it cannot
# parse (python-multipart and JSON) does not disagree.
_DOMAINS: Final = {
    "werkzeug": {JSON, FORM, MULTIPART},
    "starlette": {JSON, FORM, MULTIPART},
    "python_multipart": {FORM, MULTIPART},
}
_STDLIB_FOR: Final = {JSON: ("json.loads",), FORM: ("parse_qs", "parse_qsl"), MULTIPART: ()}
CLIENT_ADDRESS: Final = "127.0.0.1"  # the test client connects over loopback


@dataclass
class Observation:
    request: WireRequest
    marker: str
    status: int
    response_body: bytes
    opa_inputs: list[dict[str, Any]]
    upstream: UpstreamRecord | None
    decision: dict[str, Any] | None  # the sidecar's decision log entry, when it decided


@dataclass
class Judgement:
    outcome: str  # "allowed", "refused" or "broken"
    reason: str = ""
    mismatches: list[str] = field(default_factory=list)


def judge(obs: Observation) -> Judgement:
    if obs.upstream is None:
        if obs.status in REFUSAL_STATUSES or obs.status == 0:
            return Judgement("refused", _refusal_reason(obs))
        if obs.status == ENVOY_REDIRECT and not obs.opa_inputs:
            return Judgement("refused", "envoy 307: escaped slash redirected")
        if obs.status == ENVOY_CHECK_ERROR:
            return Judgement("refused", "envoy 503: no answer from the check in time")
        return Judgement("broken", f"status {obs.status}", [f"neither refused nor allowed: {_response(obs)}"])
    if obs.status != 200:
        return Judgement(
            "broken", f"status {obs.status}", [f"the upstream got it, the client {_response(obs)}"]
        )
    if len(obs.opa_inputs) != 1:
        return Judgement("allowed", "", [f"allowed after {len(obs.opa_inputs)} OPA checks"])
    mismatches: list[str] = []
    _compare(obs.opa_inputs[0], obs.upstream, mismatches)
    return Judgement("allowed", "", mismatches)


def _response(obs: Observation) -> str:
    return f"got {obs.status} {obs.response_body[:200]!r}"


def _refusal_reason(obs: Observation) -> str:
    if obs.decision is None:
        return f"envoy {obs.status or 'reset'}"
    return f"{obs.decision.get('reason')}: {obs.decision.get('detail', '')}"


def _compare(doc: dict[str, Any], up: UpstreamRecord, out: list[str]) -> None:
    http = doc["attributes"]["request"]["http"]
    headers: dict[str, str] = http.get("headers", {})
    if http.get("method") != up.method:
        out.append(f"method: policy {http.get('method')!r}, upstream {up.method!r}")
    if http.get("path") != up.target:
        out.append(f"request target: policy {http.get('path')!r}, upstream {up.target!r}")
    app_path = up.path.lstrip("/").split("/")
    if doc.get("parsed_path") != app_path:
        out.append(f"parsed_path: policy {doc.get('parsed_path')!r}, werkzeug path {up.path!r}")
    _compare_query(doc.get("parsed_query"), up, out)
    _compare_headers(headers, up, out)
    _compare_connection_facts(doc, headers, up, out)
    seen = _policy_body(http, out)
    truncated = doc.get("truncated_body")
    if truncated is not True and seen != up.body:
        out.append(
            f"truncated_body {truncated!r} but the policy saw {len(seen)} bytes {seen[:120]!r}, "
            f"the upstream got {len(up.body)} bytes {up.body[:120]!r}"
        )
    if truncated is True and not up.body.startswith(seen):
        out.append(f"truncated body is not a prefix of the upstream's: {seen[:120]!r} vs {up.body[:120]!r}")
    if truncated is True and doc.get("parsed_body") is not None:
        out.append(f"truncated body with a parsed_body: {_short(doc.get('parsed_body'))}")
    if truncated is not True:
        _compare_parsed_body(doc.get("parsed_body"), up, out)


def _compare_query(parsed_query: Any, up: UpstreamRecord, out: list[str]) -> None:
    views = {
        "werkzeug args": up.args,
        "parse_qs": up.query_parse_qs,
        "parse_qsl": _pairs(up.query_parse_qsl),
        "starlette query_params": up.query_starlette,
    }
    for name, value in views.items():
        if parsed_query != value:
            out.append(f"parsed_query: policy {parsed_query!r}, {name} {value!r} (query {up.query_string!r})")


def _pairs(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _compare_headers(policy: dict[str, str], up: UpstreamRecord, out: list[str]) -> None:
    """Byte for byte: the upstream's values are latin-1 (PEP 3333), the policy's UTF-8 text."""
    upstream: dict[str, list[str]] = {}
    for name, value in up.headers:
        upstream.setdefault(name, []).append(value)
    authority = policy.get(":authority")
    if authority is not None and [authority] != upstream.get("host"):
        out.append(f"host: policy :authority {authority!r}, upstream host {upstream.get('host')!r}")
    for name, values in upstream.items():
        if name in _AFTER_THE_CHECK or name == "host":
            continue
        if name == "content-length" and name not in policy and values == [str(len(up.body))]:
            continue  # framing Envoy writes for the upstream hop (HTTP/2, or a bodiless POST)
        joined = ",".join(values).encode("latin-1")
        seen = policy.get(name)
        if seen is None:
            out.append(f"header {name}: the upstream got {values!r}, the policy saw nothing")
        elif seen.encode("utf-8", "surrogatepass") != joined:
            out.append(f"header {name}: policy {seen!r}, upstream bytes {joined!r}")
    for name, seen in policy.items():
        if name.startswith(":") or name in _CHECK_ONLY or name in upstream or name in _AFTER_THE_CHECK:
            continue
        out.append(f"header {name}: the policy saw {seen!r}, the upstream got nothing")


def _compare_connection_facts(
    doc: dict[str, Any], headers: dict[str, str], up: UpstreamRecord, out: list[str]
) -> None:
    attributes = doc["attributes"]
    http = attributes["request"]["http"]
    if http.get("scheme") != "http" or headers.get(":scheme", "http") != "http":
        out.append(
            f"scheme: the listener is plain HTTP, the policy saw "
            f"{http.get('scheme')!r}/{headers.get(':scheme')!r}"
        )
    for name in ("x-forwarded-proto",):
        if up.header_values(name) != ["http"]:
            out.append(f"{name}: the upstream got {up.header_values(name)!r} from a plain-HTTP listener")
    source = attributes.get("source", {}).get("address", {}).get("socketAddress", {}).get("address")
    # HTTP mode cannot carry the source address (absent); a different one is a mismatch.
    if source not in (CLIENT_ADDRESS, None) or ("source" in attributes and source is None):
        out.append(f"source address: policy {source!r}, the client is {CLIENT_ADDRESS}")
    hops = [hop.strip() for value in up.header_values("x-forwarded-for") for hop in value.split(",")]
    if hops != [CLIENT_ADDRESS]:
        out.append(f"x-forwarded-for: the upstream got {hops!r}, the client is {CLIENT_ADDRESS}")


def _policy_body(http: dict[str, Any], out: list[str]) -> bytes:
    raw = http.get("rawBody")
    text = http.get("body")
    if raw is not None:
        data = base64.b64decode(raw)
        if text is not None and text.encode("utf-8", "surrogatepass") != data:
            out.append(f"body: the text {text[:120]!r} is not the bytes {data[:120]!r}")
        return data
    if text is not None and "\ufffd" in text:
        out.append(f"body: the string holds U+FFFD, the bytes are unknown: {text[:120]!r}")
    return (text or "").encode("utf-8", "surrogatepass")


def application_kinds(up: UpstreamRecord) -> set[str]:
    """The body kinds the application libraries' own dispatch took the request for."""
    return {kind for name in _DOMAINS if (kind := up.parsers[name].kind) is not None}


def _compare_parsed_body(parsed: Any, up: UpstreamRecord, out: list[str]) -> None:
    kinds = {name: up.parsers[name].kind for name in _DOMAINS}
    claimed = application_kinds(up)
    if not up.body and parsed is None:
        return  # an empty body is no body: no parser can read it otherwise than the policy
    for kind in claimed:
        silent = [name for name, domain in _DOMAINS.items() if kind in domain and kinds[name] != kind]
        if silent:
            out.append(
                f"media type: {[n for n, k in kinds.items() if k == kind]} parse the body as {kind}, "
                f"{silent} do not (content-type {up.header_values('content-type')!r})"
            )
    if len(claimed) != 1:
        return
    [kind] = claimed
    names = [name for name in _DOMAINS if kinds[name] == kind] + list(_STDLIB_FOR[kind])
    for name in names:
        view: ParserView = up.parsers[name]
        if view.error is not None:
            out.append(
                f"{name} cannot parse the {kind} body the policy saw as {_short(parsed)}: {view.error}"
            )
        elif not _same_body(parsed, view.value, kind):
            out.append(f"parsed_body: policy {_short(parsed)}, {name} {_short(view.value)}")


def _same_body(policy: Any, app: Any, kind: str) -> bool:
    if kind != MULTIPART or not isinstance(policy, dict) or not isinstance(app, dict):
        return same_json(policy, app)
    if policy.keys() != app.keys():
        return False
    for name, values in policy.items():
        if not isinstance(values, list) or len(values) != len(app[name]):
            return False
        for seen, text in zip(values, app[name], strict=True):
            # A JSON part reaches the policy parsed; the application gets its text.
            if isinstance(seen, str):
                if seen != text:
                    return False
            else:
                try:
                    if not same_json(seen, json.loads(text)):
                        return False
                except ValueError:
                    return False
    return True


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1, 1.0 and True are three different things."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."
