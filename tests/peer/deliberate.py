"""The differences between the sidecar and the OPA-Envoy plugin that are meant, each with a
name the README's "The OPA-Envoy plugin as a peer" section lists with its reason.

`explain` names the one difference that accounts for two outcomes, or returns None when
nothing meant does: the test then fails and shows both.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from tests.peer.outcome import Outcome

MULTIPART: Final = "non-canonical multipart"
NOT_ASCII: Final = "header value outside printable ASCII, or padded"
# Requests the sidecar refuses (400, `bad_request`) and the plugin takes, by the words of the
# sidecar's decision-log detail.
REFUSALS: Final = {
    "repeated query or form name": ("repeated parameter name",),
    "form pair without '='": ("form body has an empty pair or a name without '='",),
    "duplicate JSON key": ("JSON body repeats a key",),
    "inexact JSON number": ("JSON number cannot be represented exactly", "cannot be kept exact"),
    MULTIPART: ("multipart",),
    NOT_ASCII: ("outside printable ASCII",),
    "'!' in text headers or a string body": ("'!'",),
    "body without content-type": ("has a body but no content-type",),
}
FAIL_CLOSED: Final = "denied where the plugin fails"
STRICTER_RESULT: Final = "stricter result checks"
PARSE_ERROR_BODY: Final = "400 body names no parser error"
HEADER_MAP: Final = "headers from headerMap"
BODY_TEXT: Final = "body beside rawBody"
PLUS_JSON: Final = "+json bodies parsed"

# Reasons for which the sidecar denies and the plugin answers a gRPC error instead.
_FAIL_CLOSED_REASONS: Final = {"undefined", "invalid_result", "opa_http_status"}


def _refusal(detail: str) -> str | None:
    for name, needles in REFUSALS.items():
        if any(needle in detail for needle in needles):
            return name
    return None


def explain(request: CheckRequest, sidecar: Outcome, decision: dict[str, Any], peer: Outcome) -> str | None:
    """The deliberate difference between `sidecar` (whose decision-log entry is `decision`)
    and `peer`; None when they are the same or differ in a way nothing here explains."""
    if sidecar == peer:
        return None
    http = request.attributes.request.http
    if http.header_map.headers and not http.headers:
        return HEADER_MAP
    if sidecar.echoed_input is not None and peer.echoed_input is not None:
        return _input_difference(request, sidecar.echoed_input, peer.echoed_input)
    reason, detail = decision.get("reason", ""), str(decision.get("detail", ""))
    if reason == "bad_request":
        if peer.kind == "deny" and peer.http_status == 400 and sidecar.http_status == 400:
            same_but_body = Outcome(**{**peer.__dict__, "body": sidecar.body, "metadata": sidecar.metadata})
            return PARSE_ERROR_BODY if same_but_body == sidecar else None
        return _refusal(detail)
    if sidecar.kind == "deny" and sidecar.http_status == 403 and reason in _FAIL_CLOSED_REASONS:
        if peer.kind == "error":
            return FAIL_CLOSED
        if reason == "invalid_result":
            return STRICTER_RESULT
    return None


def _input_difference(request: CheckRequest, ours: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """The deliberate differences between two input documents the echo policy sent back,
    joined with " + "; None when something else differs too."""
    http = request.attributes.request.http
    media_type = http.headers.get("content-type", "").split(";")[0].strip().lower()
    found = []
    ours = copy.deepcopy(ours)
    ours_http = ours.get("attributes", {}).get("request", {}).get("http", {})
    theirs_http = theirs.get("attributes", {}).get("request", {}).get("http", {})
    if http.raw_body and not http.body and "body" in ours_http and "body" not in theirs_http:
        del ours_http["body"]  # the sidecar gives the bytes as text too
        found.append(BODY_TEXT)
    if (
        media_type.endswith("+json")
        and theirs.get("parsed_body") is None
        and ours.get("parsed_body") is not None
    ):
        ours["parsed_body"] = None
        found.append(PLUS_JSON)
    return " + ".join(found) if found and ours == theirs else None
