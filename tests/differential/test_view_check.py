"""The differential test's judge on hand-made observations: it must see each kind of difference
(otherwise a green run proves nothing), and pass a faithful view."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from tests.differential.parsing_upstream import MARKER_HEADER, UpstreamRecord, parse_request
from tests.differential.strategies import WireRequest
from tests.differential.view_check import Observation, judge

BODY = b"action=delete"
FORM = "application/x-www-form-urlencoded"


def upstream_record(body: bytes = BODY, content_type: str = FORM, query: str = "") -> UpstreamRecord:
    headers = [
        ("host", "127.0.0.1:1"),
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        (MARKER_HEADER, "m"),
    ]
    environ: dict[str, Any] = EnvironBuilder(
        path="/orders", query_string=query, method="POST", data=body, headers=headers
    ).get_environ()
    environ["REQUEST_URI"] = "/orders" + (f"?{query}" if query else "")
    environ.update(REMOTE_ADDR="127.0.0.1", REMOTE_PORT=1)
    environ["differential.raw_headers"] = headers
    return parse_request(environ)


def policy_view(body: bytes = BODY, parsed_body: Any = None, truncated: bool = False) -> dict[str, Any]:
    return {
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 5}}},
            "request": {
                "http": {
                    "method": "POST",
                    "path": "/orders",
                    "scheme": "http",
                    "headers": {
                        ":authority": "127.0.0.1:1",
                        ":scheme": "http",
                        "content-type": FORM,
                        "content-length": str(len(BODY)),
                        "x-forwarded-for": "127.0.0.1",
                        "x-forwarded-proto": "http",
                        MARKER_HEADER: "m",
                    },
                    "rawBody": base64.b64encode(body).decode(),
                }
            },
        },
        "parsed_path": ["orders"],
        "parsed_query": {},
        "parsed_body": {"action": ["delete"]} if parsed_body is None else parsed_body,
        "truncated_body": truncated,
    }


def observe(doc: dict[str, Any] | None, upstream: UpstreamRecord | None, status: int = 200) -> Observation:
    request = WireRequest("HTTP/1.1", "POST", "/orders", (), BODY, "length")
    return Observation(request, "m", status, b"", [doc] if doc else [], upstream, None)


def test_a_faithful_view_passes() -> None:
    verdict = judge(observe(policy_view(), upstream_record()))
    assert (verdict.outcome, verdict.mismatches) == ("allowed", [])


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (policy_view(parsed_body={"action": ["read"]}), "parsed_body: policy"),
        (policy_view(body=b"action=del"), "truncated_body False but the policy saw 10 bytes"),
        (policy_view(body=b"action=re", truncated=True), "not a prefix"),
        ({**policy_view(), "parsed_query": {"a": ["1"]}}, "parsed_query"),
        ({**policy_view(), "parsed_path": ["admin"]}, "parsed_path"),
    ],
)
def test_each_difference_is_reported(doc: dict[str, Any], expected: str) -> None:
    verdict = judge(observe(doc, upstream_record()))
    assert verdict.outcome == "allowed"
    assert any(expected in mismatch for mismatch in verdict.mismatches), verdict.mismatches


def test_a_header_only_the_upstream_got_is_reported() -> None:
    doc = policy_view()
    del doc["attributes"]["request"]["http"]["headers"]["x-forwarded-for"]
    assert any("header x-forwarded-for" in m for m in judge(observe(doc, upstream_record())).mismatches)


def test_parsers_that_disagree_on_the_media_type_fail_an_allowed_request() -> None:
    # python-multipart reads application/x-url-encoded as a form; werkzeug and Starlette do not.
    verdict = judge(
        observe(policy_view(parsed_body={}), upstream_record(content_type="application/x-url-encoded"))
    )
    assert any(m.startswith("media type") for m in verdict.mismatches), verdict.mismatches


def test_refused_only_when_the_upstream_never_got_it() -> None:
    assert judge(observe(None, None, status=400)).outcome == "refused"
    late = judge(observe(policy_view(), upstream_record(), status=403))
    assert late.outcome == "broken" and late.mismatches
    assert judge(observe(None, None, status=502)).mismatches
