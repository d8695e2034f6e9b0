"""The agentgateway linter: its standalone config file (``binds``, ``mcp``,
``llm``, ...) and the ``AgentgatewayPolicy`` resource of its Kubernetes
controller.

Facts from agentgateway's published schema (schema/config.json) and its
controller's API types:

- ``extAuthz`` (config file) takes ``failureMode`` ``allow``, ``deny`` (the
  default) or ``{denyWithStatus: N}``; the resource's ``extAuth`` takes
  ``FailOpen`` or ``FailClosed``. Either may sit under ``conditional``.
- ``cache`` (both forms) answers a request whose key expressions match an
  earlier one with that earlier result until its ttl, without a check.
- ``includeRequestBody`` (file) has ``maxRequestBytes`` (0 when left out),
  ``allowPartialMessage`` and ``packAsBytes``; over gRPC without packAsBytes
  the body goes in the string field, decoded with invalid UTF-8 replaced.
- MCP policy processors (``mcpGuardrails`` in the file, ``guardrails`` under
  ``backend.mcp`` in the resource) take ``failureMode`` ``failOpen`` /
  ``FailOpen``.

The config file is read by serde: exact names, YAML 1.2 booleans, unknown
values refused (agentgateway then does not start, or keeps its last config)."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, as_list, get_path

AGENTGATEWAY_CONFIG = "agentgateway-config"
AGENTGATEWAY_POLICY = "agentgateway-policy"
_TOP_LEVEL = frozenset(
    {"config", "binds", "frontendPolicies", "policies", "workloads", "services", "backends",
     "routeGroups", "gateways", "routes", "tcpRoutes", "llm", "mcp", "ui"}
)  # fmt: skip
_ANCHORS = frozenset({"binds", "llm", "mcp"})
_FILE_MODES = {"allow": True, "deny": False}
_RESOURCE_MODES = {"FailOpen": True, "FailClosed": False}
_CACHE_FIX = (
    "remove cache: the sidecar answers each check from the policy as it is now, and its deny memory "
    "only works on requests that reach it"
)


def lint(data: Json, sidecar: SidecarSettings) -> tuple[set[str], list[Issue]]:
    document = as_dict(data)
    if document is None:
        return set(), []
    if _is_policy(document):
        return {AGENTGATEWAY_POLICY}, _policy(document)
    if _is_config(document):
        return {AGENTGATEWAY_CONFIG}, _config(document, sidecar)
    return set(), []


def _is_policy(document: dict[str, Json]) -> bool:
    return str(document.get("apiVersion", "")).startswith("agentgateway.dev/") and (
        document.get("kind") == "AgentgatewayPolicy"
    )


def _is_config(document: dict[str, Json]) -> bool:
    keys = set(document)
    return bool(keys) and keys <= _TOP_LEVEL and bool(keys & _ANCHORS)


def _config(document: dict[str, Json], sidecar: SidecarSettings) -> list[Issue]:
    issues: list[Issue] = []
    for path, node in walk(document):
        mapping = as_dict(node)
        if mapping is None:
            continue
        ext_authz = as_dict(mapping.get("extAuthz"))
        if ext_authz is not None:
            for where, entry in _with_conditional(ext_authz, (*path, "extAuthz")):
                issues += _file_ext_authz(entry, where, sidecar)
        guardrails = as_dict(mapping.get("mcpGuardrails"))
        if guardrails is not None:
            for position, raw in enumerate(as_list(guardrails.get("processors")) or []):
                processor = as_dict(raw) or {}
                issues += _processor(processor, (*path, "mcpGuardrails", "processors", position), "failOpen")
    return issues


def _with_conditional(config: dict[str, Json], path: Pointer) -> list[tuple[Pointer, dict[str, Json]]]:
    """The settings themselves, or each entry of ``conditional`` (the resource
    nests an entry's settings under ``policy``)."""
    entries = as_list(config.get("conditional"))
    if entries is None:
        return [(path, config)]
    found = []
    for position, raw in enumerate(entries):
        entry = as_dict(raw) or {}
        policy = as_dict(entry.get("policy"))
        where: Pointer = (*path, "conditional", position)
        found.append(((*where, "policy"), policy) if policy is not None else (where, entry))
    return found


def _file_ext_authz(config: dict[str, Json], path: Pointer, sidecar: SidecarSettings) -> list[Issue]:
    issues = _failure_mode(config, path, _FILE_MODES, "failureMode: allow")
    issues += _cache(config, path)
    body = as_dict(config.get("includeRequestBody"))
    if body is not None:
        grpc = as_dict(config.get("protocol")) is None or "grpc" in (as_dict(config.get("protocol")) or {})
        issues += _body(body, (*path, "includeRequestBody"), sidecar, grpc=grpc)
    return issues


def _failure_mode(config: dict[str, Json], path: Pointer, modes: dict[str, bool], shown: str) -> list[Issue]:
    if "failureMode" not in config:
        return []
    value = config["failureMode"]
    where = (*path, "failureMode")
    if isinstance(value, str) and modes.get(value):
        return [
            rules.AGENTGATEWAY_FAIL_OPEN.issue(
                where,
                f"{shown}: when the authorization service cannot be reached or answers an error, "
                "agentgateway lets the request through unchecked",
                "remove failureMode (the default denies), or deny with a status of your choice",
            )
        ]
    if isinstance(value, str) and value in modes:
        return []
    if modes is _FILE_MODES and _is_deny_with_status(value):
        return []
    return [_unread(where, value, " or ".join(modes))]


def _is_deny_with_status(value: Json) -> bool:
    mapping = as_dict(value)
    return mapping is not None and list(mapping) == ["denyWithStatus"]


def _unread(where: Pointer, value: Json, expected: str) -> Issue:
    return rules.NOT_VERIFIED.issue(
        where,
        f"failureMode {value!r} is not one agentgateway knows ({expected}): the configuration that holds it "
        "is refused, so what runs instead cannot be seen here",
        f"write one of {expected}",
    )


def _cache(config: dict[str, Json], path: Pointer) -> list[Issue]:
    if as_dict(config.get("cache")) is None:
        return []
    return [
        rules.AGENTGATEWAY_DECISION_CACHE.issue(
            (*path, "cache"),
            "cache: a request whose key expressions match an earlier one gets that earlier answer until the "
            "ttl ends, without a check: an allow outlives a revoked credential, a policy change and the "
            "sidecar's deny memory, and any fact the policy reads that the key leaves out (path, method, "
            "body, another header) lets one request reuse another's allow",
            _CACHE_FIX,
        )
    ]


def _body(body: dict[str, Json], path: Pointer, sidecar: SidecarSettings, *, grpc: bool) -> list[Issue]:
    issues = []
    if grpc and body.get("packAsBytes") is not True:
        issues.append(
            rules.BODY_AS_STRING.issue(
                (*path, "packAsBytes") if "packAsBytes" in body else path,
                "over gRPC without packAsBytes the body reaches the sidecar in the string field body, "
                "decoded with every invalid UTF-8 sequence replaced by U+FFFD: the policy reads a different "
                "body than the MCP server or application",
                "set includeRequestBody.packAsBytes: true; the sidecar reads raw_body exactly as sent",
            )
        )
    if body.get("allowPartialMessage") is not True:
        return issues
    issues.append(
        rules.PARTIAL_BODY.issue(
            (*path, "allowPartialMessage"),
            "allowPartialMessage: true sends only the first maxRequestBytes of a larger body: the policy "
            "sees a truncated body (input.truncated_body)",
            "make the policy refuse or ignore a body when input.truncated_body is true, or remove "
            "allowPartialMessage so larger bodies are refused",
        )
    )
    limit = body.get("maxRequestBytes", 0)
    if limit != sidecar.envoy_max_request_bytes:
        issues.append(
            rules.PARTIAL_BODY_LIMIT_MISMATCH.issue(
                (*path, "maxRequestBytes") if "maxRequestBytes" in body else path,
                f"agentgateway cuts bodies at maxRequestBytes {limit!r} (0 when left out), but the sidecar "
                f"was told {sidecar.envoy_max_request_bytes} (--envoy-max-request-bytes): a chunked body cut "
                "at agentgateway's limit can reach the policy as complete",
                f"set maxRequestBytes: {sidecar.envoy_max_request_bytes}, or the sidecar's flag to the same "
                "number",
            )
        )
    return issues


def _policy(document: dict[str, Json]) -> list[Issue]:
    issues: list[Issue] = []
    ext_auth = as_dict(get_path(document, "spec", "traffic", "extAuth"))
    if ext_auth is not None:
        for where, entry in _with_conditional(ext_auth, ("spec", "traffic", "extAuth")):
            issues += _failure_mode(entry, where, _RESOURCE_MODES, "failureMode: FailOpen")
            issues += _cache(entry, where)
    processors = as_list(get_path(document, "spec", "backend", "mcp", "guardrails", "processors")) or []
    for position, raw in enumerate(processors):
        remote = as_dict((as_dict(raw) or {}).get("remote"))
        if remote is not None:
            path: Pointer = ("spec", "backend", "mcp", "guardrails", "processors", position, "remote")
            issues += _processor(remote, path, "FailOpen")
    return issues


def _processor(processor: dict[str, Json], path: Pointer, fail_open: str) -> list[Issue]:
    modes = {fail_open: True, fail_open.replace("Open", "Closed"): False}
    value = processor.get("failureMode")
    if "failureMode" in processor and not (isinstance(value, str) and value in modes):
        return [_unread((*path, "failureMode"), value, " or ".join(modes))]
    if value != fail_open:
        return []
    return [
        rules.MCP_GUARDRAILS_FAIL_OPEN.issue(
            (*path, "failureMode"),
            f"failureMode: {fail_open}: when this MCP policy server cannot be reached or answers an error, "
            "the JSON-RPC call (tools/call, tools/list, ...) goes on to the MCP server unchecked",
            "remove failureMode (failClosed is the default)",
        )
    ]
