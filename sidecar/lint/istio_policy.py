"""Istio AuthorizationPolicy resources, read as the Kubernetes API server and
istiod read them: the CRD's schema knows camelCase names only (any other key
is dropped), and ``istio.io/dry-run`` is parsed with Go's strconv.ParseBool.

A CUSTOM policy's rules do not decide anything: istiod turns them into RBAC
shadow rules whose match switches the ext_authz filter on for that request
(``filter_enabled_metadata``). A request no rule matches is never sent to the
provider, and Istio then allows it unless an ALLOW policy covers it (CUSTOM is
evaluated before DENY and ALLOW, which cannot bring a skipped request back).
So every condition in a CUSTOM rule is a way around the check, and the ones a
client controls are a way around it at will. Whether an ALLOW policy covers the
skipped requests is read from the policies linted together (``istio_context``)."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.go_reading import go_parse_bool
from sidecar.lint.istio_context import IstioContext, scope_of
from sidecar.lint.values import Json, as_dict, as_list, get_path

AUTHORIZATION_POLICY = "istio-authorization-policy"
_EXEMPTING_SOURCES = ("notPrincipals", "notRequestPrincipals", "notNamespaces")
_DRY_RUN = "istio.io/dry-run"
_SHADOW_INSTEAD = (
    "to try a policy safely, run it as a shadow policy in the sidecar, which never changes the answer"
)
# to.operation fields the client writes, and how it steps out of them.
_CLIENT_OPERATION = {
    "hosts": "sends another Host (or :authority) header",
    "notHosts": "sends one of these Host headers",
    "methods": "uses another method",
    "notMethods": "uses one of these methods",
}
_CLIENT_SOURCE = {
    "requestPrincipals": "sends no token at all",
    "remoteIpBlocks": "writes x-forwarded-for where the proxy trusts it",
    "notRemoteIpBlocks": "writes x-forwarded-for where the proxy trusts it",
}
# when-condition keys the client controls: its headers, whether it sends a token, SNI, forwarded address.
_CLIENT_KEYS = ("request.headers[", "request.auth.", "connection.sni", "remote.ip")
_SCOPING = ("paths", "notPaths", "methods", "notMethods", "hosts", "notHosts", "ports", "notPorts")
_CLIENT_FIX = (
    "send every request of the workload to the provider (rules: [{}]) and decide on these facts in the "
    "policy, which sees them (input.attributes.request.http)"
)


def check_policy(document: dict[str, Json], context: IstioContext) -> list[Issue]:
    spec = as_dict(document.get("spec")) or {}
    action = str(spec.get("action", "ALLOW"))
    issues = _dry_run(document, action)
    if action != "CUSTOM":
        return issues
    provider = get_path(spec, "provider", "name")
    label = f"provider {provider!r}" if isinstance(provider, str) else "its provider"
    rule_list = as_list(spec.get("rules")) or []
    if not rule_list:
        issues.append(
            rules.CUSTOM_POLICY_NO_RULES.issue(
                ("spec",),
                f"this CUSTOM policy has no rules, so it matches no request and nothing is sent to {label}",
                "add rules: [{}] to send every request of the selected workloads to the provider",
            )
        )
        return issues
    if any(_matches_everything(rule) for rule in rule_list):
        return issues
    exemptions = []
    for r, raw in enumerate(rule_list):
        rule = as_dict(raw) or {}
        exemptions += _identities(rule, ("spec", "rules", r))
        exemptions += _client_facts(rule, ("spec", "rules", r), label)
        exemptions += _paths(rule, ("spec", "rules", r), label)
    issues += exemptions
    if not context.allow_covers(scope_of(document)):
        issues.append(_uncovered(rule_list, label))
    elif not exemptions:
        issues.append(
            rules.CUSTOM_POLICY_PARTIAL_SCOPE.issue(
                ("spec", "rules"),
                f"only requests matching these rules are sent to {label}; the others skip ext_authz and are "
                "allowed unless an ALLOW policy covers them (istio/istio#47219)",
                "pair it with an ALLOW policy for the same workloads, or use rules: [{}] and let the "
                "policy decide",
            )
        )
    return issues


def _uncovered(rule_list: list[Json], label: str) -> Issue:
    conditions = set()
    for raw in rule_list:
        for _, operation in _entries(as_dict(raw) or {}, "to", "operation"):
            conditions |= {f"{key} {values}" for key, values in operation.items() if key in _SCOPING}
    scoped = f" ({'; '.join(sorted(conditions))})" if conditions else ""
    return rules.CUSTOM_POLICY_UNCOVERED.issue(
        ("spec", "rules"),
        f"these rules{scoped} send only some requests to {label}; the others skip ext_authz, and no ALLOW "
        "policy among the files linted applies to these workloads, so Istio lets them through unchecked",
        "use rules: [{}] and let the policy decide, or add an ALLOW policy for the same workloads whose "
        "rules allow only what may pass unchecked (and lint it with this one)",
    )


def _matches_everything(raw: Json) -> bool:
    """A rule with no condition (``{}``, or empty from/to/when) matches every request."""
    rule = as_dict(raw)
    return rule is not None and not any(rule.get(part) for part in ("from", "to", "when"))


def _entries(rule: dict[str, Json], part: str, inner: str) -> list[tuple[Pointer, dict[str, Json]]]:
    found: list[tuple[Pointer, dict[str, Json]]] = []
    for position, entry in enumerate(as_list(rule.get(part)) or []):
        fields = as_dict((as_dict(entry) or {}).get(inner))
        if fields is not None:
            found.append(((part, position, inner), fields))
    return found


def _identities(rule: dict[str, Json], path: Pointer) -> list[Issue]:
    return [
        rules.CUSTOM_POLICY_EXEMPTS_IDENTITIES.issue(
            (*path, *where, key),
            f"callers matching {key} are exempted from this CUSTOM policy and skip the ext_authz check "
            "altogether (istio/istio#42162)",
            "send every caller to the provider and decide on identities in the policy "
            "(input.attributes.source.principal)",
        )
        for where, source in _entries(rule, "from", "source")
        for key in _EXEMPTING_SOURCES
        if key in source
    ]


def _client_facts(rule: dict[str, Json], path: Pointer, label: str) -> list[Issue]:
    found: list[tuple[Pointer, str]] = []
    for where, operation in _entries(rule, "to", "operation"):
        found += [((*where, key), f"{key}: a client {how}") for key, how in _CLIENT_OPERATION.items()
                  if _listed(operation.get(key))]  # fmt: skip
    for where, source in _entries(rule, "from", "source"):
        found += [((*where, key), f"{key}: a client {how}") for key, how in _CLIENT_SOURCE.items()
                  if _listed(source.get(key))]  # fmt: skip
    for position, raw in enumerate(as_list(rule.get("when")) or []):
        condition = as_dict(raw) or {}
        key = condition.get("key")
        if isinstance(key, str) and key.startswith(_CLIENT_KEYS):
            way = "sets" if "notValues" in condition else "leaves out or changes"
            found.append((("when", position, "key"), f"a condition on {key}: a client {way} it"))
    return [
        rules.CUSTOM_POLICY_CLIENT_EXEMPTION.issue(
            (*path, *where),
            f"this CUSTOM rule sends a request to {label} only when the client chose so; {how} and the "
            "request matches no rule, skips ext_authz, and reaches the workload unless an ALLOW policy "
            "covers it",
            _CLIENT_FIX,
        )
        for where, how in found
    ]


def _paths(rule: dict[str, Json], path: Pointer, label: str) -> list[Issue]:
    issues = []
    for where, operation in _entries(rule, "to", "operation"):
        scoped = [str(p) for p in as_list(operation.get("paths")) or [] if str(p) != "*"]
        if scoped:
            issues.append(
                rules.CUSTOM_POLICY_PATH_EXEMPTION.issue(
                    (*path, *where, "paths"),
                    f"only requests whose path matches {', '.join(scoped)} are sent to {label}. The client "
                    "writes the path, and Istio matches it as Envoy normalised it (by default without "
                    "merging slashes or decoding %2F), case-sensitively: /API/x, //api/x or /api;x/ match "
                    "no rule and skip ext_authz, while many applications serve them as /api/x",
                    "use rules: [{}] and decide on the path in the policy, or at least normalise paths "
                    "mesh-wide (meshConfig.pathNormalization.normalization: DECODE_AND_MERGE_SLASHES)",
                )
            )
        wildcards = [str(p) for p in as_list(operation.get("notPaths")) or [] if "*" in str(p)]
        if wildcards:
            issues.append(
                rules.CUSTOM_POLICY_PATH_EXEMPTION.issue(
                    (*path, *where, "notPaths"),
                    f"notPaths {', '.join(wildcards)} exempt every path the client writes to match them: "
                    "/public/..;/admin matches /public/* and *.css matches /admin;.css, which servers that "
                    "read ';' as a parameter serve as /admin; those requests skip ext_authz",
                    "exempt exact paths only, or use rules: [{}] and let the policy allow public paths",
                )
            )
    return issues


def _listed(value: Json) -> bool:
    return bool(as_list(value))


def _dry_run(document: dict[str, Json], action: str) -> list[Issue]:
    annotations = as_dict(get_path(document, "metadata", "annotations")) or {}
    value = annotations.get(_DRY_RUN)
    if not isinstance(value, str) or not go_parse_bool(value) or action == "AUDIT":
        return []
    path: Pointer = ("metadata", "annotations", _DRY_RUN)
    fix = f"remove the {_DRY_RUN} annotation; {_SHADOW_INSTEAD}"
    if action == "DENY":
        return [
            rules.ISTIO_DRY_RUN_DENY.issue(
                path,
                "this DENY policy is in dry-run: Istio only logs what it would deny and lets it through",
                fix,
            )
        ]
    effect = (
        "Istio does not support dry-run for CUSTOM policies; what the proxy then does is not established"
        if action == "CUSTOM"
        else "Istio does not enforce it; if it is the workload's only ALLOW policy, every request is allowed"
    )
    return [rules.ISTIO_DRY_RUN.issue(path, f"this {action} policy is in dry-run: {effect}", fix)]
