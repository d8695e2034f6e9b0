"""Hypothesis strategies for what the fault OPA answers, each labelled by construction:
is it a valid yes (a complete, well-formed 200 JSON answer whose result allows, in time),
and if not, which deny reasons are acceptable.

The labels come from the documented contract (README, "Decisions" and "Deny reasons"),
never from the sidecar's own interpreter, so the property test checks the one against
the other. Most faults carry a yes-shaped payload: a sidecar that ignored the fault
would allow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import strategies as st

from tests.fault_opa import Behaviour

YES: Final = b'{"result":true}\n'
# HTTP statuses a deny may carry: Envoy's StatusCode values from 200 to 599.
DENY_STATUSES: Final = (
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402,
    403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426, 428,
    429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
)  # fmt: skip


@dataclass(frozen=True)
class Answer:
    kind: str
    behaviour: Behaviour = field(repr=False)
    valid_yes: bool
    reasons: frozenset[str] = frozenset()  # acceptable deny reasons; empty for a valid yes
    body: bytes = field(default=b"", repr=True)


def _yes(kind: str, behaviour: Behaviour) -> Answer:
    return Answer(kind, behaviour, True, frozenset(), behaviour.body)


def _no(kind: str, behaviour: Behaviour, *reasons: str) -> Answer:
    return Answer(kind, behaviour, False, frozenset(reasons), behaviour.body)


# -- result objects: good and bad fields -----------------------------------------------------

_TOKEN_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
_header_names = st.text(alphabet=_TOKEN_ALPHABET, min_size=1, max_size=16)
# Visible characters and spaces, any script; no controls (C0, DEL, C1) and no surrogates.
_header_values = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=24)
_header_object = st.dictionaries(
    _header_names, st.one_of(_header_values, st.lists(_header_values, max_size=3)), max_size=3
)
_good_headers = st.one_of(_header_object, st.lists(_header_object, max_size=2))
_safe_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)

GOOD_FIELDS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "headers": _good_headers,
    "response_headers_to_add": _good_headers,
    "request_headers_to_remove": st.lists(_header_names, max_size=3),
    "query_parameters_to_set": st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(_header_values, st.lists(_header_values, max_size=2)),
        max_size=3,
    ),
    "query_parameters_to_remove": st.lists(st.text(min_size=1, max_size=8), max_size=3),
    "dynamic_metadata": st.dictionaries(st.text(max_size=6), _safe_json, max_size=3),
    "body": st.text(max_size=20),
    "http_status": st.sampled_from(DENY_STATUSES),
    "reason": st.text(max_size=10),  # not a field the sidecar knows: ignored
}

_not_a_name = st.sampled_from(["X-Upper", "", "has space", "colon:", "é", "new\nline", 7, None])
_not_a_value = st.sampled_from(["a\nb", "a\rb", "nul\x00", "del\x7f", 7, None, True, {"a": "b"}, "x" * 16385])
_bad_headers = st.one_of(
    st.builds(lambda name: {name: "v"} if isinstance(name, str) else [name], _not_a_name),
    st.builds(lambda value: {"x-h": value}, _not_a_value),
    st.builds(lambda value: {"x-h": ["ok", value]}, _not_a_value),
    st.sampled_from(["x-h: v", 7, None, True, [["x-h", "v"]], [None]]),
)
BAD_FIELDS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "allowed": st.sampled_from(["true", 1, 0, None, [True], {"value": True}, "yes"]),
    "headers": _bad_headers,
    "response_headers_to_add": _bad_headers,
    "request_headers_to_remove": st.sampled_from([["X-Upper"], [""], "x-h", [7], None, {"x-h": True}]),
    "query_parameters_to_set": st.sampled_from([["a", "b"], {"": "v"}, {"a": 7}, {"a": "x\ny"}, None, "a=b"]),
    "query_parameters_to_remove": st.sampled_from([[""], "a", [None], None, {"a": 1}]),
    "dynamic_metadata": st.sampled_from([[], "meta", 7, None, True]),
    "body": st.sampled_from([7, None, ["a"], {"a": "b"}, True]),
    "http_status": st.sampled_from([600, 199, 299, 100, -1, "403", 403.0, 403.5, None, True]),
}


@st.composite
def result_objects(draw: st.DrawFn, allowed: bool, bad: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"allowed": allowed}
    for name in draw(st.lists(st.sampled_from(sorted(GOOD_FIELDS)), max_size=4, unique=True)):
        result[name] = draw(GOOD_FIELDS[name])
    if bad:
        for name in draw(st.lists(st.sampled_from(sorted(BAD_FIELDS)), min_size=1, max_size=2, unique=True)):
            if name == "allowed" and draw(st.booleans()):
                del result["allowed"]  # missing rather than mistyped
            else:
                result[name] = draw(BAD_FIELDS[name])
    return result


def _envelope(result: Any, draw: st.DrawFn) -> dict[str, Any]:
    envelope = {"result": result}
    extra: dict[str, Any] = draw(
        st.sampled_from(
            [
                {},
                {},
                {"decision_id": "d-1"},
                {"decision_id": 7},
                {"metrics": {"timer_x": 1}},
                {"warning": {"code": "x"}},
            ]
        )
    )
    return {**extra, **envelope}


def _encode(value: Any, draw: st.DrawFn) -> bytes:
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode() + draw(
        st.sampled_from([b"", b"\n", b" \r\n"])
    )


# -- the answers ---------------------------------------------------------------------------------


@st.composite
def answers(draw: st.DrawFn, budget: float, max_response_bytes: int) -> Answer:
    """One fault OPA answer; `budget` is the sidecar's --opa-timeout, so "slow" is
    comfortably beyond it and "in time" comfortably within it."""
    late = budget + 0.3
    kind = draw(st.sampled_from(_KINDS))
    ok_type = draw(
        st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/json;"]
        )
    )

    if kind == "yes":
        result: Any = True if draw(st.booleans()) else draw(result_objects(allowed=True, bad=False))
        body = _encode(_envelope(result, draw), draw)
        framing = draw(st.sampled_from(["length", "length", "chunked", "close", "delay"]))
        behaviour = Behaviour(
            body=body,
            content_type=ok_type,
            chunked=framing == "chunked",
            keep_alive=framing != "close",
            delay=0.02 if framing == "delay" else 0.0,
        )
        return _yes(kind, behaviour)
    if kind == "big-yes":  # large, valid, under the limit
        return _yes(kind, Behaviour.huge(max_response_bytes // 2, chunked=draw(st.booleans())))
    if kind == "no":
        result = False if draw(st.booleans()) else draw(result_objects(allowed=False, bad=False))
        return _no(
            kind,
            Behaviour(body=_encode(_envelope(result, draw), draw), content_type=ok_type),
            "policy_denied",
        )
    if kind == "bad-object":
        result = draw(result_objects(allowed=draw(st.booleans()), bad=True))
        return _no(kind, Behaviour.json(_envelope(result, draw)), "invalid_result")
    if kind == "truthy-allowed":  # the most dangerous confusion: a yes-ish value that is not true
        result = draw(result_objects(allowed=True, bad=False))
        result["allowed"] = draw(BAD_FIELDS["allowed"])
        return _no(kind, Behaviour.json(_envelope(result, draw)), "invalid_result")
    if kind == "bad-result":
        result = draw(st.sampled_from(["true", 1, None, [], [True], {}, "allowed", 0.0]))
        return _no(kind, Behaviour.json(_envelope(result, draw)), "invalid_result")
    if kind == "number-beyond-double":
        # JSON's grammar allows it, but no reader agrees on its value: not a clear yes.
        body = b'{"result":{"allowed":true,"dynamic_metadata":{"n":1' + b"0" * 400 + b"}}}"
        return _no(kind, Behaviour.answer(body=body), "opa_bad_response", "invalid_result")
    if kind == "undefined":
        body = draw(
            st.sampled_from([b"{}", b'{"decision_id":"d-2"}', b'{"warning":{"code":"api_usage_warning"}}'])
        )
        return _no(kind, Behaviour.answer(body=body, content_type=ok_type), "undefined")
    if kind == "status":
        status = draw(st.sampled_from([201, 202, 203, 206, 400, 401, 403, 404, 429, 500, 502, 503, 504]))
        return _no(kind, Behaviour.answer(status, YES), "opa_http_status")
    if kind == "redirect":
        status = draw(st.sampled_from([301, 302, 303, 307, 308]))
        behaviour = Behaviour(status=status, body=YES, headers=(("Location", "/v1/data/envoy/authz/allow"),))
        return _no(kind, behaviour, "opa_http_status")
    if kind == "garbage":
        body = draw(
            st.one_of(
                st.sampled_from(
                    [
                        b'{"result": tru',
                        b'{"result":true} x',
                        b'{"result":true}{"result":true}',
                        b"",
                        b'{"result":false,"result":true}',
                        b'{"result":{"allowed":false,"allowed":true}}',
                        b'{"result":NaN}',
                        b'{"result":true,"x":"\\ud800"}',
                        b"\xef\xbb\xbf" + YES,
                        b"true",
                        b'[{"result":true}]',
                        b'{"result":true,"x":"\xff"}',
                        b"<html>yes</html>",
                        b"null",
                        b'{"result":Infinity}',
                        b"{'result': True}",
                        b'{"result":true,}',
                    ]
                ),
                st.binary(max_size=40).map(lambda b: b"\xff" + b),
            )
        )
        return _no(kind, Behaviour.answer(body=body), "opa_bad_response")
    if kind == "wrong-content-type":
        ctype = draw(
            st.sampled_from(
                ["text/html", "text/plain", "application/jsonx", "application/problem+json", None]
            )
        )
        return _no(
            kind,
            Behaviour.wrong_content_type(ctype, YES) if ctype else Behaviour(content_type=None),
            "opa_bad_response",
        )
    if kind == "encoded":
        encoding = draw(st.sampled_from(["gzip", "deflate", "br", "x-unknown"]))
        return _no(kind, Behaviour(headers=(("Content-Encoding", encoding),)), "opa_bad_response")
    if kind == "too-big":
        return _no(
            kind, Behaviour.huge(max_response_bytes + 1024, chunked=draw(st.booleans())), "opa_bad_response"
        )
    if kind == "short-body":  # Content-Length promises more than arrives before the close
        raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n" + YES
        return _no(kind, Behaviour.raw(raw), "opa_unreachable", "opa_bad_response")
    if kind == "truncated-chunked":
        return _no(kind, Behaviour.truncated_chunked(YES), "opa_unreachable", "opa_bad_response")
    if kind == "bad-status-line":
        raw = draw(
            st.sampled_from([b"garbage\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n", b"HTTP/9 200\r\n\r\n" + YES])
        )
        return _no(kind, Behaviour.raw(raw), "opa_bad_response", "opa_unreachable")
    if kind == "smuggled":
        # A "no" whose body is followed by a whole second response saying yes: the
        # extra response must never answer a later check.
        second = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n" + YES
        behaviour = Behaviour(body=b'{"result":false}' + second, headers=(("Content-Length", "16"),))
        return _no(kind, behaviour, "policy_denied", "opa_bad_response")
    if kind == "closed":
        return _no(kind, Behaviour.close_early(), "opa_unreachable")
    if kind == "reset":
        return _no(
            kind, Behaviour.reset_mid_body(after=0.01, body=YES), "opa_unreachable", "opa_bad_response"
        )
    if kind == "slow":
        return _no(kind, Behaviour.delayed(late, Behaviour(body=YES)), "opa_timeout")
    if kind == "stalled":
        return _no(
            kind,
            Behaviour.stalled(late, at=draw(st.integers(0, len(YES) - 1)), then=Behaviour(body=YES)),
            "opa_timeout",
        )
    assert kind == "drip"
    return _no(kind, Behaviour.slow_drip(late / 4, YES), "opa_timeout")


# Valid answers are drawn about as often as faults: the "if" half of the invariant
# needs allows to happen.
_KINDS: Final = [
    "yes", "yes", "yes", "yes", "yes", "big-yes", "no", "no", "bad-object", "bad-object", "truthy-allowed",
    "truthy-allowed", "bad-result", "number-beyond-double", "undefined", "status", "redirect", "garbage",
    "garbage", "wrong-content-type", "encoded", "too-big", "short-body", "truncated-chunked",
    "bad-status-line", "smuggled", "closed", "reset", "slow", "stalled", "drip",
]  # fmt: skip
