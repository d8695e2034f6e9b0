"""Masking of the input document before it is logged (``--log-input``).

Masked values keep their key and lose their value. Header values named in
the masked set, values at the configured JSON pointers, and query parameters
masked through ``/parsed_query/<name>`` (also inside the raw path) are
replaced. The raw request body is never logged: it cannot be masked field by
field, so only ``parsed_body`` (with its pointers masked) is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote_plus

import orjson

from sidecar.signals import JsonPointer

MASK = "<masked>"
DEFAULT_MASKED_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")


def _copy(document: dict[str, Any]) -> dict[str, Any]:
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(document))
    except TypeError:  # integers beyond 64 bits
        copied = json.loads(json.dumps(document))
    return copied


class Masker:
    def __init__(self, headers: Iterable[str] = (), pointers: Sequence[JsonPointer] = ()) -> None:
        self._headers = frozenset(DEFAULT_MASKED_HEADERS) | {h.lower() for h in headers}
        self._pointers = tuple(pointers)
        self._query_names = frozenset(
            p.tokens[1] for p in self._pointers if len(p.tokens) == 2 and p.tokens[0] == "parsed_query"
        )

    def mask(self, document: dict[str, Any]) -> dict[str, Any]:
        doc = _copy(document)
        http = doc.get("attributes", {}).get("request", {}).get("http")
        if isinstance(http, dict):
            self._mask_http(http)
        for pointer in self._pointers:
            _mask_at(doc, pointer.tokens)
        return doc

    def _mask_http(self, http: dict[str, Any]) -> None:
        headers = http.get("headers")
        if isinstance(headers, dict):
            for name in headers:
                if name.lower() in self._headers:
                    headers[name] = MASK
            if ":path" in headers and isinstance(headers[":path"], str):
                headers[":path"] = self._mask_query(headers[":path"])
        header_map = http.get("headerMap", {}).get("headers")
        if isinstance(header_map, list):
            for entry in header_map:
                if isinstance(entry, dict) and str(entry.get("key", "")).lower() in self._headers:
                    for field in ("value", "rawValue"):
                        if field in entry:
                            entry[field] = MASK
        for field in ("body", "rawBody"):
            if field in http:
                http[field] = MASK
        if isinstance(http.get("path"), str):
            http["path"] = self._mask_query(http["path"])

    def _mask_query(self, target: str) -> str:
        path, sep, query = target.partition("?")
        if not sep or not self._query_names:
            return target
        parts = []
        for item in query.split("&"):
            key, eq, _ = item.partition("=")
            if eq and unquote_plus(key) in self._query_names:
                item = f"{key}={MASK}"
            parts.append(item)
        return f"{path}?{'&'.join(parts)}"


def _mask_at(doc: Any, tokens: Sequence[str]) -> None:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return
    last = tokens[-1] if tokens else None
    if isinstance(node, dict) and last in node:
        node[last] = _masked(node[last])
    elif isinstance(node, list) and last is not None and last.isdigit() and int(last) < len(node):
        node[int(last)] = _masked(node[int(last)])


def _masked(value: Any) -> Any:
    # A list of values (parsed_query, form fields) keeps its length, not its content.
    if isinstance(value, list):
        return [MASK for _ in value]
    return MASK
