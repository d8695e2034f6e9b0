"""Masking of the input document before it is logged (``--log-input``).

Masked values keep their key and lose their value. Header values named in
the masked set, values at the configured JSON pointers, and query parameters
masked through ``/parsed_query/<name>`` are replaced wherever the input
carries them: a header appears both in ``headers`` and in ``headerMap``
(``value`` and the base64 ``rawValue``), and the raw target with its query
string appears in ``path``, ``query``, ``:path`` and ``x-envoy-original-path``.
The raw request body is never logged: it cannot be masked field by field, so
only ``parsed_body`` (with its pointers masked) is. A value the log cannot
carry (an integer beyond 64 bits, a lone surrogate) is replaced alone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote_plus

import orjson

from sidecar.signals import JsonPointer

MASK = "<masked>"
NOT_SERIALISABLE = "<not serialisable>"
DEFAULT_MASKED_HEADERS = (
    # HTTP's own credentials and sessions
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    # API keys and tokens by convention or by product
    "x-api-key",
    "x-api-token",
    "x-api-secret",
    "apikey",
    "x-auth-token",
    "x-auth-key",  # Cloudflare
    "x-access-token",
    "x-refresh-token",
    "x-session-token",
    "x-client-secret",
    "x-csrf-token",
    "x-xsrf-token",
    "x-csrftoken",
    "x-vault-token",  # HashiCorp Vault
    "x-consul-token",  # HashiCorp Consul
    "x-nomad-token",  # HashiCorp Nomad
    "x-amz-security-token",  # AWS temporary credentials
    "x-goog-iam-authorization-token",  # Google Cloud
    "x-goog-api-key",  # Google Cloud
    "private-token",  # GitLab
    "job-token",  # GitLab CI
    "x-gitlab-token",  # GitLab webhooks
    "x-functions-key",  # Azure Functions
    "ocp-apim-subscription-key",  # Azure API Management
    "x-shopify-access-token",  # Shopify
    "x-hasura-admin-secret",  # Hasura
    "x-jfrog-art-api",  # JFrog Artifactory
    "dd-api-key",  # Datadog
    "dd-application-key",  # Datadog
    "x-sentry-auth",  # Sentry
    # Tokens an authenticating proxy in front of the application forwards
    "x-forwarded-access-token",  # oauth2-proxy
    "x-auth-request-access-token",  # oauth2-proxy
    "x-amzn-oidc-accesstoken",  # AWS load balancer
    "x-amzn-oidc-data",  # AWS load balancer
    "x-ms-token-aad-access-token",  # Azure App Service
    "x-ms-token-aad-id-token",  # Azure App Service
    "x-ms-token-aad-refresh-token",  # Azure App Service
)
# Headers whose value is a request target, query string included.
_TARGET_HEADERS = frozenset({":path", "x-envoy-original-path"})
_INT_RANGE = range(-(2**63), 2**64)  # what orjson writes


def _serialisable(value: Any) -> Any:
    """A copy of ``value`` in which each value the log cannot carry is replaced alone."""
    if isinstance(value, dict):
        return {_serialisable_key(k): _serialisable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_serialisable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if value in _INT_RANGE else NOT_SERIALISABLE
    if isinstance(value, str):
        return value if _encodable(value) else NOT_SERIALISABLE
    return NOT_SERIALISABLE


def _serialisable_key(key: Any) -> str:
    text = str(key)
    return text if _encodable(text) else text.encode("utf-8", "backslashreplace").decode("ascii", "replace")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _copy(document: dict[str, Any]) -> dict[str, Any]:
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(document))
    except TypeError:  # orjson.JSONEncodeError: some value cannot be written
        copied = _serialisable(document)
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
            for name, value in headers.items():
                if name.lower() in self._headers:
                    headers[name] = MASK
                elif name.lower() in _TARGET_HEADERS and isinstance(value, str):
                    headers[name] = self._mask_query(value)
        header_map = http.get("headerMap")
        entries = header_map.get("headers") if isinstance(header_map, dict) else None
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict):
                    self._mask_header_entry(entry)
        for field in ("body", "rawBody"):
            if field in http:
                http[field] = MASK
        if isinstance(http.get("path"), str):
            http["path"] = self._mask_query(http["path"])
        if isinstance(http.get("query"), str):
            http["query"] = self._mask_query("?" + http["query"])[1:]

    def _mask_header_entry(self, entry: dict[str, Any]) -> None:
        name = str(entry.get("key", "")).lower()
        if name in self._headers:
            for field in ("value", "rawValue"):
                if field in entry:
                    entry[field] = MASK
        elif name in _TARGET_HEADERS:
            if isinstance(entry.get("value"), str):
                entry["value"] = self._mask_query(entry["value"])
            if isinstance(entry.get("rawValue"), str):
                entry["rawValue"] = self._mask_raw_target(entry["rawValue"])

    def _mask_raw_target(self, encoded: str) -> str:
        """A base64 target: masked inside, or masked whole when it cannot be read."""
        try:
            target = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return MASK if self._query_names else encoded
        masked = self._mask_query(target)
        return encoded if masked == target else base64.b64encode(masked.encode("utf-8")).decode("ascii")

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
