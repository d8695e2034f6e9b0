"""Configuration an HTTP connection manager gets from a discovery server: its
routes (RDS, scoped RDS) and filter configs (ECDS). What is not among the files
linted together cannot be verified, and is reported so."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.envoy_context import EnvoyContext
from sidecar.lint.envoy_model import HTTP_EXT_AUTHZ_TYPES, HttpFilter
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, get_path

_LINT_TOGETHER = "lint the files the server serves (or a config dump) together with this one"


def check_discovered_routes(hcm: dict[str, Json], path: Pointer, context: EnvoyContext) -> list[Issue]:
    if "scoped_routes" in hcm:
        return [
            rules.NOT_VERIFIED.issue(
                (*path, "scoped_routes"),
                "routes come from scoped RDS: which routes disable ext_authz is not verified",
                _LINT_TOGETHER,
            )
        ]
    name = get_path(hcm, "rds", "route_config_name")
    if "rds" not in hcm or (isinstance(name, str) and name in context.route_tables):
        return []
    return [
        rules.NOT_VERIFIED.issue(
            (*path, "rds"),
            f"routes come from RDS (route_config_name {name!r}), which is not among the files linted: "
            "whether a route, virtual host or weighted cluster disables ext_authz is not verified",
            _LINT_TOGETHER,
        )
    ]


def check_discovered_filter(authz: HttpFilter) -> list[Issue]:
    """An ext_authz filter whose config comes from ECDS."""
    if not authz.from_ecds:
        return []
    others = [t for t in authz.discovery_types if t not in HTTP_EXT_AUTHZ_TYPES]
    if others:
        message = (
            f"{authz.name or 'this filter'} gets its config from ECDS, which may also send "
            f"{', '.join(others)} (type_urls or default_config): the server can replace ext_authz with a "
            "filter that authorizes nothing"
        )
    else:
        message = (
            f"{authz.name or 'this filter'} gets its ext_authz config from ECDS: failure_mode_allow, "
            "filter_enabled and the rest of what the server sends are not verified"
        )
    return [
        rules.NOT_VERIFIED.issue(
            (*authz.path, "config_discovery"),
            message,
            "allow only the ext_authz type in type_urls and default_config; " + _LINT_TOGETHER,
        )
    ]
