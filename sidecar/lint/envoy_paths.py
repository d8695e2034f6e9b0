"""Path normalisation before the check. Without it the policy gets the path as
the client wrote it (``/public/../admin``, ``/public//admin``,
``/public/%2F..%2Fadmin``), while the application may resolve it to another
resource: a rule that allows ``/public/`` then allows that one too."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, enum_name, is_true

_ESCAPED_SLASHES = (
    "IMPLEMENTATION_SPECIFIC_DEFAULT",
    "KEEP_UNCHANGED",
    "REJECT_REQUEST",
    "UNESCAPE_AND_REDIRECT",
    "UNESCAPE_AND_FORWARD",
)
_SAFE_ESCAPED = frozenset({"REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD"})


def check_path_normalisation(hcm: dict[str, Json], path: Pointer) -> list[Issue]:
    missing = []
    if not is_true(hcm.get("normalize_path")):
        missing.append("normalize_path is not true (dot segments such as /public/../admin stay)")
    if not is_true(hcm.get("merge_slashes")):
        missing.append("merge_slashes is not true (/public//admin stays)")
    action = enum_name(hcm.get("path_with_escaped_slashes_action", 0), _ESCAPED_SLASHES)
    if action not in _SAFE_ESCAPED:
        missing.append(f"path_with_escaped_slashes_action is {action or 'unknown'} (%2F stays escaped)")
    if not missing:
        return []
    return [
        rules.PATH_NOT_NORMALIZED.issue(
            path,
            "the policy gets the path as the client wrote it: "
            + "; ".join(missing)
            + ". An application that "
            "resolves the path itself can serve another resource than the one the policy allowed (Envoy "
            "1.40 sent the check /public/../admin)",
            "set normalize_path: true, merge_slashes: true and path_with_escaped_slashes_action: "
            "UNESCAPE_AND_REDIRECT",
        )
    ]
