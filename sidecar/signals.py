"""Required signals: refuse a check before asking OPA when identity or context
the operator declared mandatory is missing from the input document.

This guard holds whatever the policy says (a permissive default, a wrong
decision path); it does not replace the policy, which still decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PRINCIPAL_POINTER = "/attributes/source/principal"


@dataclass(frozen=True, slots=True)
class JsonPointer:
    """An RFC 6901 pointer, parsed once at startup."""

    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> JsonPointer:
        if not text.startswith("/"):
            raise ValueError(f"{text!r} is not a JSON pointer: it must start with '/'")
        tokens = []
        for raw in text[1:].split("/"):
            stripped = raw.replace("~0", "").replace("~1", "")
            if "~" in stripped:
                raise ValueError(f"{text!r} has '~' not followed by 0 or 1")
            tokens.append(raw.replace("~1", "/").replace("~0", "~"))
        return cls(text, tuple(tokens))

    def resolve(self, document: Any) -> Any:
        """The value at the pointer, or None when any step is missing."""
        node = document
        for token in self.tokens:
            if isinstance(node, dict):
                node = node.get(token)
            elif isinstance(node, list) and token.isdigit() and not (len(token) > 1 and token[0] == "0"):
                index = int(token)
                node = node[index] if index < len(node) else None
            else:
                return None
            if node is None:
                return None
        return node


def parse_pointers(raw: Sequence[str]) -> tuple[JsonPointer, ...]:
    return tuple(JsonPointer.parse(item.strip()) for item in raw if item.strip())


def first_missing(document: dict[str, Any], required: Sequence[JsonPointer]) -> str | None:
    """The first required pointer whose value is absent or empty, else None.

    Empty means null, "", [] or {}: a header sent with no value carries no
    identity. false and 0 are values.
    """
    for pointer in required:
        value = pointer.resolve(document)
        if value is None or value == "" or value == [] or value == {}:
            return pointer.text
    return None
