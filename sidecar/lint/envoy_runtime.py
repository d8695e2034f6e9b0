"""Runtime layers that can change whether ext_authz runs: ``filter_enabled``
and ``deny_at_disable`` each read a runtime key, and a layer that sets it
overrides the value written on the filter. A static layer is read here; a
layer from a file on disk or from a runtime discovery server (RTDS) is not in
the file, so what it could switch off is reported as not verified. The admin
layer is left out: only whoever reaches Envoy's admin endpoint can write it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, as_dict, as_int, as_list, get_path, is_false, runtime_fraction

_UNSEEN_LAYERS = ("rtds_layer", "disk_layer")


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a bootstrap's ``layered_runtime`` says; ``known`` is False when the
    document is not a bootstrap, so the runtime in use cannot be seen at all."""

    known: bool
    static: Mapping[str, tuple[Pointer, Json]] = field(default_factory=dict)  # key -> (where, value)
    unseen: tuple[str, ...] = ()  # layers whose values are not in the file


def read_runtime(root: dict[str, Json] | None) -> Runtime:
    if root is None or not ("static_resources" in root or "dynamic_resources" in root):
        return Runtime(known=False)
    static: dict[str, tuple[Pointer, Json]] = {}
    unseen = []
    for position, layer in enumerate(as_list(get_path(root, "layered_runtime", "layers")) or []):
        config = as_dict(layer) or {}
        layer_path: Pointer = ("layered_runtime", "layers", position)
        if isinstance(config.get("static_layer"), dict):
            _flatten(config["static_layer"], (*layer_path, "static_layer"), "", static)
        for kind in _UNSEEN_LAYERS:
            if kind in config:
                unseen.append(f"{kind} {config.get('name', position)!r}")
    return Runtime(True, static, tuple(unseen))


def _flatten(node: Json, path: Pointer, prefix: str, into: dict[str, tuple[Pointer, Json]]) -> None:
    """Static layer keys: ``{a: {b: 1}}`` sets ``a.b``; a FractionalPercent is a
    value. Iterative, so no depth of nesting can exhaust the stack."""
    pending: list[tuple[Json, Pointer, str]] = [(node, path, prefix)]
    while pending:
        value, where, name = pending.pop()
        if isinstance(value, dict) and "numerator" not in value:
            pending += [(item, (*where, key), f"{name}{key}.") for key, item in value.items()]
        else:
            into[name.rstrip(".")] = (where, value)


def check_runtime(config: dict[str, Json], path: Pointer, runtime: Runtime) -> list[Issue]:
    """Findings for the runtime keys of one ext_authz filter config."""
    enabled_key = get_path(config, "filter_enabled", "runtime_key")
    deny_key = get_path(config, "deny_at_disable", "runtime_key")
    if not isinstance(enabled_key, str) or "filter_enabled" not in config:
        return []
    issues = []
    share, _ = runtime_fraction(config["filter_enabled"])
    denies = get_path(config, "deny_at_disable", "default_value") is not None and not is_false(
        get_path(config, "deny_at_disable", "default_value")
    )
    if isinstance(deny_key, str) and deny_key in runtime.static and is_false(runtime.static[deny_key][1]):
        denies = False
    if enabled_key in runtime.static:
        where, value = runtime.static[enabled_key]
        share = _share(value, config["filter_enabled"])
        if share < 1.0 and not denies:
            issues.append(
                rules.FILTER_DISABLED_FRACTION.issue(
                    where,
                    f"the static runtime layer sets {enabled_key} so that filter_enabled checks only "
                    f"{share * 100:g}% of requests; without deny_at_disable the others skip authorization",
                    f"remove {enabled_key} from the runtime layer, or set deny_at_disable",
                )
            )
    if denies and (not runtime.known or runtime.unseen):  # without deny_at_disable: filter-enabled-runtime
        source = ", ".join(runtime.unseen) or "the runtime of the Envoy that loads this file"
        issues.append(
            rules.NOT_VERIFIED.issue(
                (*path, "filter_enabled", "runtime_key"),
                f"{source} can set {enabled_key} (and {deny_key or 'deny_at_disable'}), which the linter "
                "cannot see: a lower filter_enabled with deny_at_disable switched off skips authorization",
                "drop filter_enabled (every request is then checked), or lint the runtime values too",
            )
        )
    return issues


def _share(value: Json, written: Json) -> float:
    """A runtime value for a RuntimeFractionalPercent: a FractionalPercent, or
    a number taken as the numerator over the written denominator."""
    if isinstance(value, dict):
        return runtime_fraction({"default_value": value})[0]
    numerator = as_int(value)
    denominator = get_path(written, "default_value", "denominator") or "HUNDRED"
    return runtime_fraction({"default_value": {"numerator": numerator or 0, "denominator": denominator}})[0]
