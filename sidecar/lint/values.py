"""Reading config values the way the proxies read them: durations, HTTP status
codes, runtime fractions, typed configs and header-name matchers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.lint.findings import Pointer

Json = object

# A header name no authorization service would set on purpose: a pattern that
# matches it matches names nobody chose.
PROBE_HEADER = "x-opa-sidecar-lint-probe"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Bool spellings of protobuf's JSON parser (absl::SimpleAtob), checked on Envoy 1.40.
_TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})

# envoy.type.v3.StatusCode names of the 2xx codes; YAML may name an enum value,
# in any case.
_STATUS_NAMES = {
    "OK": 200,
    "Created": 201,
    "Accepted": 202,
    "NonAuthoritativeInformation": 203,
    "NoContent": 204,
    "ResetContent": 205,
    "PartialContent": 206,
    "MultiStatus": 207,
    "AlreadyReported": 208,
    "IMUsed": 226,
}
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def as_dict(value: Json) -> dict[str, Json] | None:
    return value if isinstance(value, dict) else None


def as_list(value: Json) -> list[Json] | None:
    return value if isinstance(value, list) else None


def is_true(value: Json) -> bool:
    """A bool field that Envoy reads as true: YAML's true (also yes, on), or a
    string protobuf's JSON parser takes for true (true, t, yes, y, 1, in any
    case; Envoy 1.40 rejected the same words with spaces around them)."""
    if isinstance(value, dict):  # google.protobuf.BoolValue written as a message
        value = value.get("value")
    return value is True or (isinstance(value, str) and value.lower() in _TRUE_WORDS)


def is_false(value: Json) -> bool:
    """A bool field that Envoy reads as false (set explicitly)."""
    if isinstance(value, dict):
        value = value.get("value")
    return value is False or (isinstance(value, str) and value.lower() in _FALSE_WORDS)


def as_int(value: Json) -> int | None:
    """An integer field as Envoy reads it: a number (50.0 and 5e1 included) or
    the same as a string, which protobuf's JSON mapping allows for any integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if value.strip() == value else None
        except ValueError:
            return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def enum_name(value: Json, names: tuple[str, ...]) -> str | None:
    """The name of an enum value written by name in any case, or by number
    (``names`` in number order), as Envoy 1.40 read them."""
    number = as_int(value)
    if number is not None:
        return names[number] if 0 <= number < len(names) else None
    if isinstance(value, str):
        return next((name for name in names if name.lower() == value.lower()), None)
    return None


def parse_duration(value: Json) -> float:
    """Seconds from a protobuf Duration ("0.25s" or {seconds, nanos}) or a Go
    duration ("250ms", "1m30s"). Raises ValueError for anything else."""
    if isinstance(value, dict):
        return _number(value.get("seconds", 0)) + _number(value.get("nanos", 0)) / 1e9
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-")
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(f"not a duration: {value!r}")
    return sign * total


def _number(value: Json) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def status_code(value: Json) -> int | None:
    """An HTTP status from a number, a numeric string or a StatusCode name;
    None for another name (never a 2xx)."""
    if isinstance(value, bool):
        return None
    number = as_int(value)
    if number is not None:
        return number
    if isinstance(value, str):
        return next((code for name, code in _STATUS_NAMES.items() if name.lower() == value.lower()), None)
    return None


def is_success_status(code: int | None) -> bool:
    return code is not None and 200 <= code <= 299


def runtime_fraction(value: Json) -> tuple[float, str | None]:
    """(share of requests, runtime key) of a RuntimeFractionalPercent. A missing
    numerator is 0 %, as protobuf reads it."""
    config = as_dict(value) or {}
    default = as_dict(config.get("default_value")) or {}
    denominator = enum_name(default.get("denominator", "HUNDRED"), tuple(_DENOMINATORS)) or "HUNDRED"
    share = min((as_int(default.get("numerator", 0)) or 0) / _DENOMINATORS[denominator], 1.0)
    key = config.get("runtime_key")
    return share, key if isinstance(key, str) and key else None


def typed(value: Json) -> tuple[str, dict[str, Json], Pointer] | None:
    """(message type name, fields, where the fields sit) of an Any; a
    TypedStruct is unwrapped to its ``value``."""
    config = as_dict(value)
    if config is None:
        return None
    type_url = config.get("@type")
    if not isinstance(type_url, str):
        return None
    inner_url = config.get("type_url")
    if type_url.endswith(".TypedStruct") and isinstance(inner_url, str):
        return _type_name(inner_url), as_dict(config.get("value")) or {}, ("value",)
    return _type_name(type_url), config, ()


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class NameMatcher:
    """A header-name pattern: Envoy's StringMatcher or Istio's ``*`` globs."""

    kind: str  # exact | prefix | suffix | contains | regex
    value: str

    def matches(self, name: str) -> bool:
        name, value = name.lower(), self.value.lower()
        if self.kind == "exact":
            return name == value
        if self.kind == "prefix":
            return name.startswith(value)
        if self.kind == "suffix":
            return name.endswith(value)
        if self.kind == "contains":
            return value in name
        try:
            return re.fullmatch(self.value, name, re.IGNORECASE) is not None
        except re.error:
            return False

    @property
    def matches_anything(self) -> bool:
        return self.matches(PROBE_HEADER)

    def covers(self, other: NameMatcher) -> bool:
        """True when every name ``other`` matches is matched here too (as far as
        can be told without solving regexes)."""
        if other.kind == "exact":
            return self.matches(other.value)
        if self.kind == other.kind and self.value.lower() == other.value.lower():
            return True
        return (
            self.kind == "prefix"
            and other.kind == "prefix"
            and other.value.lower().startswith(self.value.lower())
        )

    def __str__(self) -> str:
        return self.value if self.kind == "exact" else f"{self.kind} {self.value!r}"


def envoy_matcher(value: Json) -> NameMatcher | None:
    config = as_dict(value)
    if config is None:
        return None
    for kind in ("exact", "prefix", "suffix", "contains"):
        if isinstance(config.get(kind), str):
            return NameMatcher(kind, config[kind])  # type: ignore[arg-type]
    regex = as_dict(config.get("safe_regex"))
    if regex is not None and isinstance(regex.get("regex"), str):
        return NameMatcher("regex", regex["regex"])  # type: ignore[arg-type]
    return None


def envoy_matchers(value: Json) -> list[tuple[int, NameMatcher]]:
    """The patterns of a ListStringMatcher, with their positions."""
    patterns = as_list((as_dict(value) or {}).get("patterns")) or []
    found = ((position, envoy_matcher(pattern)) for position, pattern in enumerate(patterns))
    return [(position, matcher) for position, matcher in found if matcher is not None]


def istio_matcher(pattern: str) -> NameMatcher:
    """Istio header lists: exact, ``prefix*``, ``*suffix``, or ``*`` for all."""
    if pattern == "*":
        return NameMatcher("prefix", "")
    if pattern.endswith("*"):
        return NameMatcher("prefix", pattern[:-1])
    if pattern.startswith("*"):
        return NameMatcher("suffix", pattern[1:])
    return NameMatcher("exact", pattern)


def get_path(value: Json, *keys: str) -> Json:
    """value[k1][k2]... or None when a step is missing or not a mapping."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value
