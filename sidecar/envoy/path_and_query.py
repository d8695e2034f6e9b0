"""``parsed_path`` and ``parsed_query``: Go's ``url.PathUnescape`` and
``url.ParseQuery`` semantics, as the plugin applies them to the request path.
``parse_query`` also reads form bodies, as in the plugin."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_to_bytes

from sidecar.envoy.bad_request import BadRequest

__all__ = ["parse_path_and_query", "parse_query"]

# Go's url.ParseQuery refuses more than this many '&'-separated parameters
# (GODEBUG urlmaxqueryparams, default since Go 1.24; the plugin builds with 1.26).
_MAX_QUERY_PARAMS: Final = 10000

_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unescape(s: str, *, plus_is_space: bool, what: str) -> str:
    """Go's PathUnescape (plus_is_space False) or QueryUnescape (True).

    Go accepts escapes that decode to bytes which are not UTF-8 and hands the
    policy a string holding them. Python (and the JSON sent to OPA) cannot
    carry such a string unchanged, and replacing the bytes could change what
    a policy matches, so they are refused (fail closed)."""
    if plus_is_space and "+" in s:
        s = s.replace("+", " ")
    if "%" not in s:
        return s
    if _BAD_ESCAPE.search(s):
        raise BadRequest(f"invalid percent-escape in {what}")
    try:
        return unquote_to_bytes(s).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} decodes to bytes that are not UTF-8") from None


def parse_path_and_query(path: str) -> tuple[list[str], dict[str, list[str]]]:
    # Split at the first '?' and unescape before splitting on '/', so %2F acts
    # as a separator; trimming every leading '/' is the GHSA-9f29-v6mm-pw6w fix
    # (no authority parsing: "//admin/x" is ["admin", "x"]). "" gives [""].
    raw_path, _, raw_query = path.partition("?")
    decoded = _unescape(raw_path, plus_is_space=False, what="path")
    if ";" in decoded or "\\" in decoded:
        # Servlet containers drop ";params" from a segment and some servers read a
        # backslash as "/": the application could route a path the policy never saw.
        raise BadRequest("path holds ';' or a backslash, which servers resolve differently")
    return decoded.lstrip("/").split("/"), parse_query(raw_query, what="query")


def parse_query(query: str, *, what: str) -> dict[str, list[str]]:
    """Go's url.ParseQuery, with any error (which Go reports after parsing the
    rest) failing the whole request, as the plugin does, and a repeated name
    refused. Values stay lists, the plugin's shape."""
    out: dict[str, list[str]] = {}
    if not query:
        return out
    if query.count("&") >= _MAX_QUERY_PARAMS:
        raise BadRequest(f"too many parameters in {what}")
    for pair in query.split("&"):
        if ";" in pair:
            raise BadRequest(f"semicolon separator in {what}")
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key = _unescape(key, plus_is_space=True, what=what)
        value = _unescape(value, plus_is_space=True, what=what)
        if key in out:
            # Frameworks keep the first (werkzeug) or the last (Starlette,
            # Django) of a repeated name: the policy could check one value
            # while the application acts on another.
            raise BadRequest(f"repeated parameter name in {what}")
        out[key] = [value]
    return out
