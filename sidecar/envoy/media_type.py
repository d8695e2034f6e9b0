"""A request's Content-Type, parsed per RFC 9110 section 8.3.1, strictly.

Application frameworks pick a body parser from the media type, and they do
not agree on odd spellings (an escaped quote, a repeated parameter, an RFC
2231 parameter, a list of types). A media type is accepted here only in the
plain form they all read alike; anything else is a ``BadRequest``, so the
policy never sees a body parsed as one type that the application reads as
another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sidecar.envoy.bad_request import BadRequest

__all__ = ["MediaType", "parse_media_type"]

# RFC 9110 token characters (tchar).
_TCHARS: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A quoted string without quoted-pairs: parsers disagree on backslash escapes,
# so a value that needs one is refused rather than unescaped one way.
_QUOTED: Final = r'"[\t !#-\[\]-~]*"'
_TYPE: Final = re.compile(rf"({_TCHARS})/({_TCHARS})")
_PARAMETER: Final = re.compile(rf"[ \t]*;[ \t]*({_TCHARS})=({_TCHARS}|{_QUOTED})")
_TRAILING_SPACE: Final = re.compile(r"[ \t]*")


@dataclass(frozen=True, slots=True)
class MediaType:
    """type/subtype lower-cased; parameter names lower-cased, values as sent."""

    type: str
    subtype: str
    parameters: dict[str, str]

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}"

    @property
    def is_json(self) -> bool:
        """application/json or a +json structured syntax suffix (RFC 6839)."""
        return self.type == "application" and (self.subtype == "json" or self.subtype.endswith("+json"))


def parse_media_type(value: str) -> MediaType:
    """The media type of a Content-Type value; BadRequest names what is off
    (never quoting the value, which a client controls)."""
    match = _TYPE.match(value)
    if match is None:
        raise BadRequest("content-type is not a media type (type/subtype)")
    parameters: dict[str, str] = {}
    pos = match.end()
    while pos < len(value):
        param = _PARAMETER.match(value, pos)
        if param is None:
            if _TRAILING_SPACE.fullmatch(value, pos):
                break
            # Covers a list of types (Envoy joins a repeated header with ","),
            # empty parameters, RFC 2231 forms and anything not token or quoted.
            raise BadRequest("content-type has a malformed or ambiguous parameter list")
        name = param.group(1).lower()
        if "*" in name:
            raise BadRequest("content-type has an RFC 2231 parameter")
        if name in parameters:
            raise BadRequest(f"content-type repeats the {name} parameter")
        raw = param.group(2)
        parameters[name] = raw[1:-1] if raw.startswith('"') else raw
        pos = param.end()
    return MediaType(match.group(1).lower(), match.group(2).lower(), parameters)
