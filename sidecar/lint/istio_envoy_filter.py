"""Istio EnvoyFilter resources: each patch read as istiod applies it to the
configuration it generates (istio/istio pilot/pkg/networking/core/envoyfilter).

istiod puts a CUSTOM policy's filters near the top of the HTTP filter chain of
inbound sidecar and gateway listeners: after ``istio.metadata_exchange``, an
``envoy.filters.http.rbac`` filter whose shadow rules mark the requests to check,
then ``envoy.filters.http.ext_authz``, switched on by that mark. A patch can
remove either, change the ext_authz config, or put a filter before it.

Each patch value is also linted by the Envoy linter as an Envoy fragment. A MERGE
value is only part of the filter istiod wrote, so settings it leaves out are not
reported as missing. istiod turns a value into protobuf with jsonpb: a string
where a bool belongs makes it drop the patch (and the validation webhook refuse
the resource), so Envoy's own string spellings of true do not apply here."""

from __future__ import annotations

from dataclasses import replace

from sidecar.lint import envoy, rules
from sidecar.lint.envoy_before_authz import check_before_authz
from sidecar.lint.envoy_model import HTTP_EXT_AUTHZ_TYPES, http_filters
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.go_reading import refused_as_bool
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.values import Json, as_dict, as_list, get_path, is_true, typed

ENVOY_FILTER = "istio-envoy-filter"
EXT_AUTHZ_NAME = "envoy.filters.http.ext_authz"  # istiod's name for the CUSTOM ext_authz filter
RBAC_NAME = "envoy.filters.http.rbac"  # CUSTOM's shadow rules, and the ALLOW/DENY filter after ext_authz
HCM_NAME = "envoy.filters.network.http_connection_manager"
# The filters istiod places before ext_authz: a filter inserted after them still runs first.
_BEFORE_EXT_AUTHZ = frozenset({"istio.metadata_exchange", RBAC_NAME})
# Patch contexts that reach the listeners holding the CUSTOM ext_authz; ANY is the default.
_AUTHZ_CONTEXTS = frozenset({"SIDECAR_INBOUND", "GATEWAY", "ANY"})
# Findings on a MERGE value about settings it leaves out: istiod's filter has its own.
_ABSENCE_RULES = frozenset({"status-on-error-default", "validate-mutations-off", "missing-timeout"})
# ... and findings pointing at the typed config itself (a TypedStruct's value) are about what it leaves out.
_CONFIG_ROOTS = (("typed_config",), ("value",))


def is_envoy_filter(document: dict[str, Json]) -> bool:
    return str(document.get("apiVersion", "")).startswith("networking.istio.io/") and (
        document.get("kind") == "EnvoyFilter"
    )


def check_envoy_filter(document: dict[str, Json], sidecar: SidecarSettings) -> list[Issue]:
    issues = []
    for position, raw in enumerate(as_list(get_path(document, "spec", "configPatches")) or []):
        patch = as_dict(raw)
        if patch is not None:
            issues += _patch(patch, ("spec", "configPatches", position), sidecar)
    return issues


def _patch(patch: dict[str, Json], path: Pointer, sidecar: SidecarSettings) -> list[Issue]:
    apply_to = str(patch.get("applyTo", ""))
    operation = str(get_path(patch, "patch", "operation") or "")
    value = get_path(patch, "patch", "value")
    value_path: Pointer = (*path, "patch", "value")
    listener = as_dict(get_path(patch, "match", "listener")) or {}
    network_filter = get_path(listener, "filterChain", "filter", "name")
    sub_filter = get_path(listener, "filterChain", "filter", "subFilter", "name")
    reaches_authz = str(get_path(patch, "match", "context") or "ANY") in _AUTHZ_CONTEXTS
    reaches_hcm = network_filter in (None, HCM_NAME)

    issues = _value(value, value_path, operation, sidecar)
    if not reaches_authz or not reaches_hcm:
        return issues
    if apply_to == "HTTP_FILTER":
        issues += _http_filter(operation, sub_filter, value, path, value_path)
    elif apply_to == "NETWORK_FILTER" and operation in ("REMOVE", "REPLACE", "MERGE"):
        issues += _network_filter(operation, value, path, value_path)
    elif apply_to in ("LISTENER", "FILTER_CHAIN") and operation in ("REPLACE", "MERGE"):
        issues.append(
            _unresolved(
                (*path, "patch", "operation"),
                f"this {operation} of a whole {apply_to.lower().replace('_', ' ')}",
            )
        )
    return issues


def _value(value: Json, path: Pointer, operation: str, sidecar: SidecarSettings) -> list[Issue]:
    """The Envoy linter's findings on the patch value, as istiod reads it."""
    if as_dict(value) is None:
        return []
    _, found = envoy.lint(value, sidecar)
    issues = []
    for issue in found:
        written = _value_at(value, issue.path)
        if isinstance(written, str) and is_true(written) and refused_as_bool(written):
            issues.append(
                rules.NOT_VERIFIED.issue(
                    (*path, *issue.path),
                    f"{written!r} is a string where Envoy expects a bool: Envoy would read it as true, but "
                    "istiod converts patch values with jsonpb, which refuses it, so istiod drops this patch "
                    "(and its validation webhook refuses the EnvoyFilter); what runs instead is not here",
                    "write the bool unquoted (true or false)",
                )
            )
        elif operation == "MERGE" and (issue.rule.id in _ABSENCE_RULES or issue.path[-1:] in _CONFIG_ROOTS):
            continue
        else:
            issues.append(replace(issue, path=(*path, *issue.path)))
    return issues


def _value_at(value: Json, path: Pointer) -> Json:
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return None
    return value


def _http_filter(
    operation: str, sub_filter: Json, value: Json, path: Pointer, value_path: Pointer
) -> list[Issue]:
    where: Pointer = (*path, "patch", "operation")
    if operation in ("REMOVE", "REPLACE") and sub_filter in (EXT_AUTHZ_NAME, RBAC_NAME):
        if operation == "REPLACE" and sub_filter == EXT_AUTHZ_NAME and _is_ext_authz(value):
            return []  # the new ext_authz config is linted as a fragment
        return [_removes(where, operation, str(sub_filter))]
    if operation == "MERGE" and sub_filter == RBAC_NAME:
        return [
            _unresolved(
                where, f"this MERGE into {RBAC_NAME}, whose shadow rules decide what ext_authz checks,"
            )
        ]
    if _inserted_before_ext_authz(operation, sub_filter):
        return _inserted(value, value_path)
    return []


def _inserted_before_ext_authz(operation: str, sub_filter: Json) -> bool:
    if operation == "INSERT_FIRST":
        return True
    if operation == "INSERT_BEFORE":  # without a subFilter, istiod inserts first
        return sub_filter is None or sub_filter in (EXT_AUTHZ_NAME, *_BEFORE_EXT_AUTHZ)
    return operation == "INSERT_AFTER" and sub_filter in _BEFORE_EXT_AUTHZ


def _inserted(value: Json, value_path: Pointer) -> list[Issue]:
    found = http_filters([value, {"name": EXT_AUTHZ_NAME}], ())
    if len(found) != 2:
        return []
    return [
        replace(issue, path=(*value_path, *issue.path[1:])) for issue in check_before_authz(found, found[1])
    ]


def _network_filter(operation: str, value: Json, path: Pointer, value_path: Pointer) -> list[Issue]:
    where: Pointer = (*path, "patch", "operation")
    if operation == "REPLACE":
        unwrapped = typed((as_dict(value) or {}).get("typed_config"))
        if unwrapped is not None and unwrapped[0].endswith(".HttpConnectionManager"):
            return []  # the new connection manager is linted as a fragment
        return [_removes(where, operation, HCM_NAME)]
    return [_unresolved(where, f"this {operation} of the HTTP connection manager")]


def _is_ext_authz(value: Json) -> bool:
    unwrapped = typed((as_dict(value) or {}).get("typed_config"))
    return unwrapped is not None and unwrapped[0] in HTTP_EXT_AUTHZ_TYPES


def _removes(path: Pointer, operation: str, target: str) -> Issue:
    effect = {
        EXT_AUTHZ_NAME: "the ext_authz filter istiod generates for CUSTOM policies is gone",
        RBAC_NAME: "it also takes the RBAC filter whose shadow rules switch ext_authz on for each request "
        "(istiod gives CUSTOM's and ALLOW/DENY's filters this one name), so ext_authz checks nothing",
        HCM_NAME: "the listener's HTTP connection manager, and the ext_authz filter in it, is gone",
    }[target]
    verb = "removes" if operation == "REMOVE" else "replaces"
    return rules.ENVOYFILTER_REMOVES_EXT_AUTHZ.issue(
        path,
        f"this patch {verb} {target} on inbound sidecar or gateway listeners: {effect}, and requests reach "
        "the workload without a check",
        "delete the patch; to exempt a path, let the policy allow it",
    )


def _unresolved(path: Pointer, what: str) -> Issue:
    return rules.NOT_VERIFIED.issue(
        path,
        f"{what} is applied to configuration istiod generates, which the linter does not have: whether "
        "ext_authz still runs for every request cannot be verified",
        "lint the proxy's config dump (istioctl proxy-config all <pod> -o json) together with this file, "
        "or check by hand and waive",
    )
