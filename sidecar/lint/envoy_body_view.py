"""Body settings that let the policy see a body other than the one the upstream
gets: a body forwarded as a string, a body cut at a limit the sidecar does not
know, a route that sends no body at all. Checked on the ext_authz filter and on
per-route ``check_settings``."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, as_dict, is_true

_SIDECAR_FLAG = "--envoy-max-request-bytes"


def check_body(buffer: Json, path: Pointer, sidecar_limit: int, *, grpc: bool) -> list[Issue]:
    """``buffer``: a ``with_request_body`` (BufferSettings) found at ``path``;
    ``grpc``: the check goes over gRPC, where pack_as_bytes matters."""
    settings = as_dict(buffer)
    if settings is None:
        return []
    issues = []
    if grpc and not is_true(settings.get("pack_as_bytes")):
        where = (*path, "pack_as_bytes") if "pack_as_bytes" in settings else path
        issues.append(
            rules.BODY_AS_STRING.issue(
                where,
                "the body is sent to the sidecar in the string field body, where Envoy replaces every byte "
                "of an invalid UTF-8 sequence with '!' (Envoy 1.40 turned a\\xffb into a!b while the "
                "upstream got a\\xffb): the policy reads a different body than the application, and "
                "cannot tell a replaced byte from a real '!'",
                "set with_request_body.pack_as_bytes: true; the sidecar reads raw_body exactly as body",
            )
        )
    limit = settings.get("max_request_bytes")
    if is_true(settings.get("allow_partial_message")) and _as_int(limit) not in (None, sidecar_limit):
        issues.append(
            rules.PARTIAL_BODY_LIMIT_MISMATCH.issue(
                (*path, "max_request_bytes"),
                f"Envoy cuts bodies at max_request_bytes {limit}, but the sidecar was told "
                f"{sidecar_limit} ({_SIDECAR_FLAG}). A body without content-length (HTTP/1.1 chunked, "
                "HTTP/2) whose first pieces fill the buffer exactly is handed over as complete "
                "(Envoy 1.40 sent 16 of 17 bytes with x-envoy-auth-partial-body: false); the sidecar marks "
                "such a body truncated only when it knows the limit"
                + (
                    ", so with a larger setting a cut body reaches the policy as the whole body"
                    if (_as_int(limit) or 0) < sidecar_limit
                    else ", so with a smaller setting complete bodies are marked truncated"
                ),
                f"run the sidecar with {_SIDECAR_FLAG} {limit} (and lint with the same option), or set "
                f"max_request_bytes: {sidecar_limit}",
            )
        )
    return issues


def check_route_body(settings: dict[str, Json], path: Pointer, sidecar_limit: int) -> list[Issue]:
    """Per-route ``check_settings`` found at ``path``. The route cannot tell
    which mode the filter uses; pack_as_bytes is harmless in HTTP mode."""
    issues = []
    if is_true(settings.get("disable_request_body_buffering")):
        issues.append(
            rules.BODY_NOT_FORWARDED.issue(
                (*path, "disable_request_body_buffering"),
                "disable_request_body_buffering: true sends no body to the policy on this route while the "
                "upstream gets all of it. Envoy 1.40 drops transfer-encoding before the check, so a chunked "
                "HTTP/1.1 body or an HTTP/2 body without content-length leaves no trace: the policy sees a "
                "request without a body",
                "remove the override, so the route sends the body like every other; if the route must not "
                "buffer, let the policy refuse requests with a body there",
            )
        )
    grpc = "http_service" not in settings
    return issues + check_body(
        settings.get("with_request_body"), (*path, "with_request_body"), sidecar_limit, grpc=grpc
    )


def _as_int(value: Json) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
