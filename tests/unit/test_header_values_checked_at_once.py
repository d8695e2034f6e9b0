"""The header values are checked in one regex call over all of them joined by
line breaks; that must accept exactly what checking each value alone accepts,
whatever a value holds (a line break above all, which could otherwise split one
bad value into two good lines)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from sidecar._proto.envoy.service.auth.v3 import attribute_context_pb2
from sidecar.envoy.bad_request import BadRequest
from sidecar.envoy.headers import request_headers

# The rule for one value, written out on its own: printable ASCII, inner
# spaces and tabs only, no '!' in a value that came as a string.
_ONE_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?")

_chars = st.sampled_from(["a", "Z", "0", " ", "\t", "\n", "\r", "!", "\x00", "\x7f", "é", "/", "=", ","])
_values = st.text(_chars, max_size=6)
_raw = st.binary(max_size=6) | _values.map(lambda v: v.encode("utf-8"))


def _accepts(http: attribute_context_pb2.AttributeContext.HttpRequest) -> bool:
    try:
        request_headers(http)
    except BadRequest:
        return False
    return True


@given(path=_values, values=st.lists(_values, max_size=4))
def test_string_values_at_once_equal_one_by_one(path: str, values: list[str]) -> None:
    http = attribute_context_pb2.AttributeContext.HttpRequest(path=path)
    for n, value in enumerate(values):
        http.headers[f"x-h{n}"] = value
    expected = all(_ONE_VALUE.fullmatch(v) and "!" not in v for v in (path, *values))
    assert _accepts(http) == expected


@given(values=st.lists(_raw, min_size=1, max_size=4))
def test_raw_values_at_once_equal_one_by_one(values: list[bytes]) -> None:
    http = attribute_context_pb2.AttributeContext.HttpRequest()
    for n, raw in enumerate(values):
        http.header_map.headers.add(key=f"x-h{n % 2}", raw_value=raw)
    # A value given as empty bytes is read from the (empty) string value: "".
    expected = all(_ONE_VALUE.fullmatch(raw.decode("latin-1")) for raw in values)
    assert _accepts(http) == expected
