"""Connection manager settings that let the client write the forwarded facts the
policy sees (x-forwarded-for, x-forwarded-proto, the scheme).

What Envoy 1.40 did with a client that forged them (tests/lint/test_view_behaviour.py):
without use_remote_address the client's x-forwarded-for and x-forwarded-proto reach
the check unchanged, and HTTP/1.1's scheme follows that x-forwarded-proto; with it,
x-forwarded-proto is the connection's but the client's x-forwarded-for entries stay
in front of Envoy's; an HTTP/2 client picks :scheme itself (https over plain text)
unless scheme_header_transformation.scheme_to_overwrite is set; xff_num_trusted_hops
makes Envoy trust the client's x-forwarded-for (and keep its x-forwarded-proto unless
scheme_to_overwrite, which rewrites x-forwarded-proto too, is set). The source address in the check is
the connection's peer in every case.
"""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.envoy_chain import removed_before
from sidecar.lint.envoy_model import HttpFilter
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, NameMatcher, as_dict, get_path, is_true

# Forwarding headers Envoy never writes from the connection: whatever reaches the
# policy is what the client sent.
CLIENT_FORWARDING_HEADERS = ("forwarded", "x-forwarded-host", "x-real-ip")
_REMOVE_EARLY = (
    "an early_header_mutation_extensions header_mutation on the connection manager (it runs before Envoy "
    "writes its own forwarded headers)"
)


def check_forwarded_facts(
    hcm: dict[str, Json],
    path: Pointer,
    filters: list[HttpFilter],
    authz: HttpFilter,
    route_config: dict[str, Json] | None,
    *,
    tls: bool | None,
) -> list[Issue]:
    """``tls``: the listener's filter chain terminates TLS (None: not known here)."""
    removed = removed_before(hcm, filters, authz, route_config)
    problems, fixes = [], []
    if not is_true(hcm.get("use_remote_address")):
        problems.append(
            "use_remote_address is not true, so Envoy keeps the client's x-forwarded-for and "
            "x-forwarded-proto, and takes an HTTP/1.1 request's scheme from that x-forwarded-proto"
        )
        fixes.append("set use_remote_address: true")
    problems_scheme, fix_scheme = _scheme(hcm, tls)
    problems += problems_scheme
    fixes += fix_scheme
    if not _covered("x-forwarded-for", removed):
        skip = is_true(hcm.get("skip_xff_append"))
        problems.append(
            "the client's x-forwarded-for is neither removed nor overwritten before ext_authz, so "
            + (
                "with skip_xff_append the whole header is the client's"
                if skip
                else "its entries stay in front of the address Envoy appends"
            )
        )
        fixes.append(
            "remove the client's x-forwarded-for, or overwrite it with "
            "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, in " + _REMOVE_EARLY
        )
    issues = []
    if problems:
        issues.append(
            rules.FORWARDED_FACTS_FROM_CLIENT.issue(
                path,
                "the policy cannot trust the request's forwarded facts: " + "; ".join(problems),
                "; ".join(fixes),
            )
        )
    hops = hcm.get("xff_num_trusted_hops")
    if isinstance(hops, int) and not isinstance(hops, bool) and hops > 0:
        issues.append(
            rules.XFF_TRUSTED_HOPS.issue(
                (*path, "xff_num_trusted_hops"),
                f"xff_num_trusted_hops: {hops} trusts the last {hops} x-forwarded-for entries: the client's "
                "address is whatever stands there (Envoy 1.40 passed a forged one to the policy as "
                "x-envoy-external-address), and the client's x-forwarded-proto is kept unless "
                "scheme_to_overwrite rewrites it. Right only when exactly that many proxies that overwrite "
                "both headers stand in front of every connection",
                "set xff_num_trusted_hops: 0; if such proxies are really in front, waive this finding with "
                "the reason (metadata opa-sidecar.lint on the listener)",
            )
        )
    if not issues:
        left = [name for name in CLIENT_FORWARDING_HEADERS if not _covered(name, removed)]
        if left:
            issues.append(
                rules.CLIENT_FORWARDING_HEADERS.issue(
                    path,
                    f"{', '.join(left)}: Envoy never writes these from the connection, so the policy and the "
                    "upstream both get the client's values; a policy or application that reads them trusts "
                    "the client",
                    "remove them in " + _REMOVE_EARLY + ", or make sure nothing reads them",
                )
            )
    return issues


def _scheme(hcm: dict[str, Json], tls: bool | None) -> tuple[list[str], list[str]]:
    scheme = get_path(hcm, "scheme_header_transformation", "scheme_to_overwrite")
    wanted = None if tls is None else ("https" if tls else "http")
    if not isinstance(scheme, str) or scheme.lower() not in ("http", "https"):
        return (
            [
                "scheme_header_transformation.scheme_to_overwrite is not set, so an HTTP/2 client chooses "
                ":scheme, which the policy gets as attributes.request.http.scheme (match_upstream only acts "
                "after the check)"
            ],
            [f"set scheme_header_transformation: {{scheme_to_overwrite: {wanted or 'http or https'}}}"],
        )
    if wanted is not None and scheme.lower() != wanted:
        kind = "a TLS" if tls else "a plain-text"
        return (
            [f"scheme_to_overwrite is {scheme} on {kind} listener"],
            [f"set scheme_to_overwrite: {wanted}"],
        )
    return [], []


def _covered(name: str, removed: list[NameMatcher]) -> bool:
    return any(matcher.matches(name) for matcher in removed)


def listener_tls(data: Json, hcm_path: Pointer) -> bool | None:
    """Whether the filter chain holding the connection manager at ``hcm_path``
    has a transport socket (TLS); None when it is not in a filter chain."""
    if len(hcm_path) < 3 or hcm_path[-3] != "filters" or hcm_path[-1] != "typed_config":
        return None
    chain: Json = data
    for part in hcm_path[:-3]:
        if isinstance(chain, dict) and isinstance(part, str):
            chain = chain.get(part)
        elif isinstance(chain, list) and isinstance(part, int) and 0 <= part < len(chain):
            chain = chain[part]
        else:
            return None
    chain_config = as_dict(chain)
    if chain_config is None:
        return None
    return "transport_socket" in chain_config
