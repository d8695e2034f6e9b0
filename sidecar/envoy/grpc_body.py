"""``parsed_body`` of a gRPC request, decoded with a protobuf descriptor set.

With ``--proto-descriptor`` (a FileDescriptorSet, as ``protoc
--descriptor_set_out --include_imports`` writes it), the request message of a
unary call is decoded with the input type of the method its path names and
rendered as protojson renders it in the OPA-Envoy plugin: JSON field names,
64-bit integers as strings, enums by name, bytes as base64, well-known types
in their JSON form, fields at their default value left out.

The plugin passes over what it cannot read (``parsed_body: null``) or reads
only part of it (the first of several messages). The policy must see the
message the application decodes, so everything else is refused
(``BadRequest``): a compressed message or a ``grpc-encoding`` other than
identity, several messages or a frame whose length does not match the body,
a path that names no method of the set, a streaming method, bytes that do not
decode, and fields the set does not describe (unknown fields, extensions, an
``Any``), which the application's newer code may read while the policy
cannot see them. A body cut by Envoy gets ``parsed_body: null`` as any other.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from sidecar.envoy.bad_request import BadRequest
from sidecar.envoy.media_type import MediaType
from sidecar.regular_file import FileRefused, read_regular_file

__all__ = ["GrpcMethods", "is_grpc"]

# Larger descriptor sets are refused at start: the file is read whole.
MAX_DESCRIPTOR_SET_BYTES: Final = 64 << 20

_PREFIX_BYTES: Final = 5  # compressed flag (1 byte), message length (4 bytes, big-endian)
_PROTO_SUBTYPES: Final = frozenset({"grpc", "grpc+proto"})
_IDENTIFIER: Final = r"[A-Za-z_][A-Za-z0-9_]*"
# What gRPC servers route on: /<service full name>/<method name>, nothing else.
_METHOD_PATH: Final = re.compile(rf"/({_IDENTIFIER}(?:\.{_IDENTIFIER})*)/({_IDENTIFIER})")
_ANY: Final = "google.protobuf.Any"
_FLOAT_WRAPPER: Final = "google.protobuf.FloatValue"
_FLOAT32_EXPONENT: Final = 0x7F800000
_FLOAT32_MANTISSA: Final = 0x007FFFFF
# Well-known types rendered in a JSON form of their own, holding no float32.
_WELL_KNOWN_WITHOUT_FLOAT32: Final = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "Timestamp", "Duration", "Struct", "Value", "ListValue", "FieldMask", "Empty", "DoubleValue",
        "Int64Value", "UInt64Value", "Int32Value", "UInt32Value", "BoolValue", "StringValue", "BytesValue",
    )
)  # fmt: skip


def is_grpc(media_type: MediaType) -> bool:
    """application/grpc with any codec suffix (+proto, +json, ...)."""
    return media_type.type == "application" and (
        media_type.subtype == "grpc" or media_type.subtype.startswith("grpc+")
    )


@dataclass(frozen=True, slots=True)
class _Method:
    input_class: type[Message]
    client_streaming: bool
    server_streaming: bool
    # Whether the input type can hold, at some depth, an Any or an extension
    # (looked for field by field) and float32 values (rewritten): most cannot,
    # and those walks cost more than the decoding.
    may_hold_any_or_extension: bool
    may_hold_float32: bool


class GrpcMethods:
    """The methods of every service in a descriptor set, with their input
    message classes built once, at start."""

    def __init__(self, pool: descriptor_pool.DescriptorPool, methods: dict[str, _Method]) -> None:
        self._pool = pool
        self._methods = methods

    @classmethod
    def from_file(cls, path: str) -> GrpcMethods:
        """Reads a FileDescriptorSet; ValueError says what is wrong with it."""
        return cls.from_bytes(_read_regular_file(path))

    @classmethod
    def from_bytes(cls, data: bytes) -> GrpcMethods:
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(data).file
        except DecodeError:
            raise ValueError("is not a serialized FileDescriptorSet") from None
        pool = descriptor_pool.DescriptorPool()
        _add_in_dependency_order(pool, list(files))
        methods: dict[str, _Method] = {}
        for file in files:
            for service in file.service:
                full_name = f"{file.package}.{service.name}" if file.package else service.name
                for method in pool.FindServiceByName(full_name).methods:
                    reachable = _reachable_types(method.input_type)
                    methods[f"/{full_name}/{method.name}"] = _Method(
                        message_factory.GetMessageClass(method.input_type),
                        method.client_streaming,
                        method.server_streaming,
                        any(t.full_name == _ANY or t.extension_ranges for t in reachable),
                        any(_is_float32(f) for t in reachable for f in t.fields),
                    )
        if not methods:
            raise ValueError("describes no service method")
        return cls(pool, methods)

    def parsed_body(
        self, media_type: MediaType, path: str, headers: Mapping[str, str], data: bytes, *, truncated: bool
    ) -> Any:
        """The request message of a gRPC call as JSON; None when Envoy cut the body."""
        if media_type.subtype not in _PROTO_SUBTYPES:
            raise BadRequest("gRPC body uses a codec other than protobuf")
        encoding = headers.get("grpc-encoding")
        if encoding is not None and encoding != "identity":
            raise BadRequest("gRPC messages may be compressed (grpc-encoding is not identity)")
        method = self._method(path)
        if not data:
            return None
        if data[0] != 0:
            raise BadRequest("gRPC message is compressed" if data[0] == 1 else "gRPC frame flag is invalid")
        if len(data) < _PREFIX_BYTES:
            if truncated:
                return None
            raise BadRequest("gRPC body is shorter than a message prefix")
        end = _PREFIX_BYTES + int.from_bytes(data[1:_PREFIX_BYTES], "big")
        if end < len(data):
            raise BadRequest("gRPC body holds more than one message")
        if truncated:
            return None
        if end > len(data):
            raise BadRequest("gRPC message length is more than the body holds")
        return self._render(method, data[_PREFIX_BYTES:])

    def _method(self, path: str) -> _Method:
        if _METHOD_PATH.fullmatch(path) is None:
            raise BadRequest("gRPC path is not /package.Service/Method")
        method = self._methods.get(path)
        if method is None:
            raise BadRequest("gRPC path names no method of --proto-descriptor")
        if method.client_streaming or method.server_streaming:
            # A stream's later messages reach the application unchecked.
            raise BadRequest("gRPC method is streaming")
        return method

    def _render(self, method: _Method, payload: bytes) -> Any:
        try:
            message = method.input_class.FromString(payload)
        except DecodeError:
            # Also invalid UTF-8 in a string, and nesting past protobuf's limit.
            raise BadRequest("gRPC message does not decode as the method's input type") from None
        size = message.ByteSize()
        message.DiscardUnknownFields()  # at every depth
        if message.ByteSize() != size:
            raise BadRequest("gRPC message has fields the descriptor set does not describe")
        if method.may_hold_any_or_extension:
            _require_no_any_or_extension(message)
        try:
            rendered = json_format.MessageToDict(message, descriptor_pool=self._pool)
        except (ValueError, TypeError, UnicodeError):
            raise BadRequest("gRPC message cannot be rendered as JSON") from None
        if method.may_hold_float32:
            _float32_as_protojson(message, rendered)
        return rendered


def _reachable_types(root: Descriptor) -> list[Descriptor]:
    """Every message type a message of type ``root`` can hold, itself included."""
    found = {root.full_name: root}
    pending = [root]
    while pending:
        for field in pending.pop().fields:
            entry = field.message_type
            if entry is not None and entry.full_name not in found:
                found[entry.full_name] = entry
                pending.append(entry)
    return list(found.values())


def _require_no_any_or_extension(message: Message) -> None:
    """Fields whose content the descriptor set does not fix: refused at any depth."""
    if message.DESCRIPTOR.full_name == _ANY:
        # Its type is resolved by name at run time, not from the descriptor set.
        raise BadRequest("gRPC message holds a google.protobuf.Any")
    for field, value in message.ListFields():
        if field.is_extension:
            raise BadRequest("gRPC message holds an extension field")
        entry = field.message_type
        if entry is None:
            continue  # a scalar
        if entry.GetOptions().map_entry:
            if entry.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    _require_no_any_or_extension(item)
        elif field.is_repeated:
            for item in value:
                _require_no_any_or_extension(item)
        else:
            _require_no_any_or_extension(value)


def _float32_as_protojson(message: Message, rendered: dict[str, Any]) -> None:
    """Rewrites float32 values as protojson writes them: the fewest digits that
    read back as the same float32. Python's renderer starts at six digits, so
    a subnormal such as 1e-45 came out as 1.4013e-45, another number to OPA."""
    for field, value in message.ListFields():
        key = field.json_name
        if _is_float32(field):
            shown = rendered[key]
            rendered[key] = (
                [_shortest_float32(v) for v in shown] if field.is_repeated else _shortest_float32(shown)
            )
        elif not _holds_float32(field):
            continue
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for map_key, item in value.items():
                name = ("true" if map_key else "false") if isinstance(map_key, bool) else str(map_key)
                if _is_float32(value_field):
                    rendered[key][name] = _shortest_float32(rendered[key][name])
                elif _holds_float32(value_field):
                    _float32_as_protojson(item, rendered[key][name])
        elif field.is_repeated:
            for item, shown in zip(value, rendered[key], strict=True):
                _float32_as_protojson(item, shown)
        else:
            _float32_as_protojson(value, rendered[key])


def _is_float32(field: FieldDescriptor) -> bool:
    """A float field, or a FloatValue, which renders as its bare value."""
    entry = field.message_type
    return field.type == FieldDescriptor.TYPE_FLOAT or (
        entry is not None and entry.full_name == _FLOAT_WRAPPER
    )


def _holds_float32(field: FieldDescriptor) -> bool:
    """A message field that may hold float32 values below it."""
    entry = field.message_type
    return entry is not None and entry.full_name not in _WELL_KNOWN_WITHOUT_FLOAT32


def _shortest_float32(value: Any) -> Any:
    """What protojson writes for a float32: the fewest significant digits that
    read back as the same float32, the nearest of them if two do. Python's
    renderer, which starts at six digits, agrees except for subnormals (too few
    digits to need six) and powers of two (whose lower neighbour is nearer than
    the upper): only those are worked out again."""
    if not isinstance(value, float) or not math.isfinite(value) or value == 0:
        return value  # NaN and the infinities are strings
    exact = _as_float32(value)
    bits = int.from_bytes(struct.pack("<f", exact), "little")
    if bits & _FLOAT32_MANTISSA == 0:
        return _shortest_power_of_two(exact)
    if bits & _FLOAT32_EXPONENT == 0:
        # A subnormal: its neighbours are equally far, so the nearest decimal
        # of each length is the one to try.
        for digits in range(1, 10):
            candidate = float(f"{exact:.{digits - 1}e}")
            if _as_float32(candidate) == exact:
                return candidate
    return value


@functools.lru_cache(maxsize=512)  # there are 2 x 254 of them
def _shortest_power_of_two(exact: float) -> float:
    for digits in range(1, 10):
        found = []
        for rounding in (decimal.ROUND_FLOOR, decimal.ROUND_CEILING):
            candidate = float(decimal.Context(prec=digits, rounding=rounding).plus(decimal.Decimal(exact)))
            with contextlib.suppress(OverflowError):  # rounded up past the largest float32
                if _as_float32(candidate) == exact:
                    found.append(candidate)
        if found:
            return min(found, key=lambda candidate: abs(candidate - exact))
    return exact


def _as_float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def _add_in_dependency_order(
    pool: descriptor_pool.DescriptorPool, files: list[descriptor_pb2.FileDescriptorProto]
) -> None:
    names = [file.name for file in files]
    if len(set(names)) != len(names):
        raise ValueError("holds a file twice")
    added: set[str] = set()
    pending = files
    while pending:
        ready = [file for file in pending if all(dep in added for dep in file.dependency)]
        if not ready:
            missing = sorted({dep for file in pending for dep in file.dependency} - added - set(names))
            raise ValueError(
                f"lacks {missing[0]} (write it with --include_imports)"
                if missing
                else "has files that import each other"
            )
        for file in ready:
            try:
                pool.Add(file)
            except (TypeError, ValueError, KeyError):
                raise ValueError(f"{file.name} does not build into descriptors") from None
            added.add(file.name)
        pending = [file for file in pending if file.name not in added]


def _read_regular_file(path: str) -> bytes:
    try:
        return read_regular_file(path, MAX_DESCRIPTOR_SET_BYTES)
    except FileRefused as refused:
        raise ValueError(str(refused)) from None
