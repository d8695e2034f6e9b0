"""The Envoy AI Gateway linter: ``MCPRoute.spec.securityPolicy.extAuth``.

Envoy AI Gateway's controller copies that field unchanged into an Envoy Gateway
SecurityPolicy it writes for the route's generated HTTPRoute
(internal/controller/mcp_route_security_policy.go), so it is read, and
reported, as a SecurityPolicy's ``extAuth`` is (``gateway``)."""

from __future__ import annotations

from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.gateway import check_ext_auth
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.values import Json, as_dict, get_path

MCP_ROUTE = "ai-gateway-mcp-route"
_EXT_AUTH: Pointer = ("spec", "securityPolicy", "extAuth")


def lint(data: Json, sidecar: SidecarSettings) -> tuple[set[str], list[Issue]]:
    document = as_dict(data)
    if document is None or not _is_mcp_route(document):
        return set(), []
    ext_auth = as_dict(get_path(document, *(str(part) for part in _EXT_AUTH)))
    if ext_auth is None:
        return {MCP_ROUTE}, []
    return {MCP_ROUTE}, check_ext_auth(ext_auth, _EXT_AUTH, sidecar.budget)


def _is_mcp_route(document: dict[str, Json]) -> bool:
    return str(document.get("apiVersion", "")).startswith("aigateway.envoyproxy.io/") and (
        document.get("kind") == "MCPRoute"
    )
