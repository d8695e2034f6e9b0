"""Differential property: a body the sidecar does not refuse is read alike by the
policy and by real application parsers (werkzeug, Starlette on python-multipart,
the standard library). In process, over generated media types and bodies; the
end-to-end variant through Envoy is tests/differential."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sidecar._proto.envoy.service.auth.v3 import external_auth_pb2
from sidecar.envoy.input import BadRequest, build_input
from tests.unit.app_parsers import FAILED, PARSERS, UNPARSED

_BASES = [
    "application/json",
    "APPLICATION/Json",
    "application/problem+json",
    "application/json-seq",
    "text/json",
    "application/x-www-form-urlencoded",
    "Application/X-WWW-Form-Urlencoded",
    "multipart/form-data",
    "Multipart/Form-Data",
    "multipart/mixed",
    "text/plain",
    "application/x-url-encoded",
]
_PARAMS = [
    "; charset=utf-8",
    ";charset=UTF-8",
    '; charset="utf-8"',
    "; charset=latin1",
    "; boundary=XyZ",
    '; boundary="XyZ"',
    ";boundary=XyZ",
    " ; boundary=XyZ",
    "; boundary=Other",
    ", text/plain",
    ",multipart/form-data; boundary=Other",
    ";",
    '; x="a;b"',
    '; x="a\\"b"',
    "; boundary*=XyZ",
    "; Boundary=XyZ",
]
content_types = st.builds(
    lambda base, params: base + "".join(params),
    st.sampled_from(_BASES),
    st.lists(st.sampled_from(_PARAMS), max_size=3),
)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
_json_texts = st.one_of(
    _json_values.map(json.dumps),
    _json_values.map(lambda v: json.dumps(v, indent=1)),
    st.sampled_from(
        ['{"a": 1, "a": 2}', '{"a": 1}\n', "\ufeff{}", "NaN", '{"a": 1e400}', "1.10", " [1 , 2] "]
    ),
)
_form_texts = st.lists(
    st.sampled_from(
        [
            *("a=1", "a=2", "b=", "c", "", "d=x+y", "e=%26", "f=%zz", "g=%ff", "h=1;i=2"),
            *("j=%C3%A9", "=k", "l=é", "\ufeffm=1"),
        ]
    ),
    max_size=4,
).map("&".join)

_DISPOSITIONS = [
    'form-data; name="a"',
    'form-data; name="b"',
    'form-data; name="f"; filename="x.txt"',
    "form-data; name=a",
    'form-data; name="a"; name="b"',
    "form-data; name=\"a\"; filename*=UTF-8''x",
    'form-data; name="a\\"b"',
    'form-data;name="c"',
    'attachment; name="d"',
    'FORM-DATA; name="e"',
    'form-data; name="f"; filename=""',
]
_EXTRA_HEADERS = ["", "\r\nContent-Type: text/plain", "\r\nContent-Type: application/json", "\r\nX-Other: 1"]
_part = st.builds(
    lambda disposition, extra, content, nl: (
        f"--XyZ{nl}Content-Disposition: {disposition}{extra}{nl}{nl}{content}{nl}"
    ),
    st.sampled_from(_DISPOSITIONS),
    st.sampled_from(_EXTRA_HEADERS),
    st.sampled_from(["1", "two words", '{"k": 1}', "line\r\nbreak", "--XyZ", "x\n--XyZ\ny", ""]),
    st.sampled_from(["\r\n", "\r\n", "\n"]),
)
_multipart_texts = st.builds(
    lambda preamble, parts, close: preamble + "".join(parts) + close,
    st.sampled_from(["", "", "preamble\r\n"]),
    st.lists(_part, max_size=3),
    st.sampled_from(["--XyZ--\r\n", "--XyZ--", "--XyZ--\r\nepilogue", "--XyZ", ""]),
)
_any_body = st.one_of(_json_texts, _form_texts, _multipart_texts)


def _typed(bases: list[str], texts: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str]]:
    """Bodies mostly of the kind their media type names, with odd parameters now and then."""
    params: st.SearchStrategy[list[str]] = st.lists(st.sampled_from(_PARAMS), max_size=2) | st.just([])
    return st.tuples(st.builds(lambda b, p: b + "".join(p), st.sampled_from(bases), params), texts)


_canonical_multipart = st.lists(
    st.builds(
        lambda name, extra, content: (
            f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n{content}\r\n'
        ),
        st.text(alphabet="abc_-. ", min_size=1, max_size=3),
        st.sampled_from([*_EXTRA_HEADERS[:3], '; filename="f.txt"']),
        st.text(alphabet='ab\r\n-{}1"é', max_size=12),
    ),
    max_size=3,
).map(lambda parts: "".join(parts) + "--XyZ--\r\n")

cases = st.one_of(
    _typed(["multipart/form-data; boundary=XyZ"], _canonical_multipart),
    _typed(["application/json", "APPLICATION/Json", "application/problem+json"], _json_texts),
    _typed(["application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded"], _form_texts),
    _typed(["multipart/form-data; boundary=XyZ", 'Multipart/Form-Data; boundary="XyZ"'], _multipart_texts),
    st.tuples(content_types, _any_body),
).map(lambda case: (case[0], case[1].encode("utf-8")))


def _sidecar_view(content_type: str, body: bytes) -> tuple[Any, bool] | None:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = "/"
    http.headers["content-type"] = content_type
    http.headers["content-length"] = str(len(body))
    http.raw_body = body
    try:
        doc = build_input(request)
    except BadRequest:
        return None
    return doc["parsed_body"], doc["truncated_body"]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_an_accepted_body_is_read_alike_by_policy_and_application(case: tuple[str, bytes]) -> None:
    content_type, body = case
    seen = _sidecar_view(content_type, body)
    if seen is None:
        event("refused")
        return  # refused: the application never gets it
    parsed, truncated = seen
    event("not parsed" if parsed is None else "parsed")
    assert not truncated
    if not body:
        assert parsed is None  # no body: nothing to parse, for the policy as for the plugin
        return
    for name, parser in PARSERS.items():
        theirs = parser(content_type, body)
        if theirs == FAILED:
            continue  # the application refuses it too
        if parsed is None:
            # Not parsed, or the JSON body null.
            assert theirs == UNPARSED or (theirs is None and body.strip() == b"null"), (
                name,
                content_type,
                body,
            )
        elif theirs != UNPARSED or name != "stdlib":
            assert _with_json_parts(theirs, body) == parsed, (name, content_type, body, theirs, parsed)


def _with_json_parts(fields: Any, body: bytes) -> Any:
    """Application parsers give a multipart part's text; the input document
    carries a part declared application/json as its JSON value (as the plugin
    does), read strictly from that same text."""
    if b"Content-Type: application/json" not in body or not isinstance(fields, dict):
        return fields
    names = re.findall(rb'name="([^"]*)"\r\nContent-Type: application/json', body)
    return {
        name: [json.loads(v) for v in values] if name.encode() in names else values
        for name, values in fields.items()
    }
