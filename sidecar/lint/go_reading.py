"""Values as the Go control planes read them, from YAML loaded by PyYAML.

istiod reads a mesh config and an EnvoyFilter patch value by turning YAML into
JSON with sigs.k8s.io/yaml (YAML 1.1) and that JSON into protobuf with the
legacy jsonpb decoder. The Kubernetes API server reads a custom resource
(AuthorizationPolicy, SecurityPolicy) against its schema, from JSON that
kubectl made the same way. What follows:

- Field names: jsonpb takes a field under its proto name (``fail_open``) and its
  JSON name (``failOpen``); written both ways, the JSON name wins whatever the
  order. A CRD schema knows the JSON names only and drops any other key.
- Booleans: YAML 1.1 words become JSON true (``yes``, ``on``, ``true`` in three
  cases, and ``y``/``Y``, which PyYAML leaves as strings). jsonpb and a CRD
  schema refuse a string where a bool belongs.
- Durations: jsonpb parses a Duration with Go's ``time.ParseDuration``
  (``250ms``, ``0.25s``, ``1m``); a Gateway API duration is whole units only.
- Annotations are strings read by Go's ``strconv.ParseBool``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.lint.values import Json

# go-yaml v2 reads these unquoted words as true; PyYAML (YAML 1.1 too) leaves them strings.
_YAML_TRUE_LETTERS = frozenset({"y", "Y"})
_YAML_FALSE_LETTERS = frozenset({"n", "N"})
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
# Gateway API Duration: 1 to 4 whole numbers of h, m, s or ms (no fractions).
_GATEWAY_DURATION = re.compile(r"(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}")
_SNAKE_PART = re.compile(r"_([a-z0-9])")


def yaml_true(value: Json) -> bool:
    """A bool field a Go control plane reads as true."""
    return value is True or (isinstance(value, str) and value in _YAML_TRUE_LETTERS)


def refused_as_bool(value: Json) -> bool:
    """A value jsonpb and a CRD schema refuse for a bool field: a string (other
    than the YAML 1.1 letters), a number, a list or a mapping."""
    if isinstance(value, bool) or value is None:
        return False
    return not (isinstance(value, str) and value in _YAML_TRUE_LETTERS | _YAML_FALSE_LETTERS)


def shown(value: Json) -> str:
    """A YAML value as it was most likely written."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def go_parse_bool(text: str) -> bool:
    """True when Go's strconv.ParseBool reads ``text`` as true (``yes`` and
    ``on`` are errors there, which istiod reads as false)."""
    return text in _GO_TRUE


def is_gateway_duration(value: Json) -> bool:
    return isinstance(value, str) and _GATEWAY_DURATION.fullmatch(value) is not None


def json_name(proto_name: str) -> str:
    """``fail_open`` -> ``failOpen``; protobuf's JSON name of a field."""
    return _SNAKE_PART.sub(lambda part: part.group(1).upper(), proto_name)


@dataclass(frozen=True, slots=True)
class Field:
    key: str  # as written
    value: Json


@dataclass(frozen=True, slots=True)
class ProtoFields:
    """A mapping read as jsonpb reads a message: by JSON name, either spelling."""

    fields: dict[str, Field]
    both_ways: tuple[tuple[str, str], ...]  # (key not used, key used) for fields written twice

    def get(self, name: str) -> Json:
        found = self.fields.get(name)
        return None if found is None else found.value

    def key(self, name: str) -> str:
        found = self.fields.get(name)
        return name if found is None else found.key

    def __contains__(self, name: str) -> bool:
        return name in self.fields


def proto_fields(mapping: dict[str, Json]) -> ProtoFields:
    fields: dict[str, Field] = {}
    both_ways: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = json_name(key) if isinstance(key, str) else str(key)
        earlier = fields.get(name)
        if earlier is not None:
            # jsonpb looks the proto name up first and the JSON name second.
            if key == name:
                both_ways.append((earlier.key, key))
            else:
                both_ways.append((key, earlier.key))
                continue
        fields[name] = Field(str(key), value)
    return ProtoFields(fields, tuple(both_ways))
