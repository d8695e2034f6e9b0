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

# Parts of the input document that only Envoy can attest: what it derived from
# the downstream connection (peer address, certificate, principal, SNI, the
# destination) and what its own filters and configuration attached. A caller
# of the JSON check API writes the whole document, so it could write these too.
_ENVOY_ATTESTED_ATTRIBUTES = frozenset(
    {"source", "destination", "tlsSession", "metadataContext", "routeMetadataContext", "contextExtensions"}
)
_ENVOY_ATTESTED_TOP_LEVEL = frozenset({"source_principal"})


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

    @property
    def envoy_attested(self) -> bool:
        """Whether the pointer names a fact only Envoy can vouch for."""
        if self.tokens[0] in _ENVOY_ATTESTED_TOP_LEVEL:
            return True
        return (
            len(self.tokens) >= 2
            and self.tokens[0] == "attributes"
            and (self.tokens[1] in _ENVOY_ATTESTED_ATTRIBUTES)
        )

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


def carries_nothing(value: Any) -> bool:
    """Whether a value is empty for the guard.

    Empty: null; a string whose every comma-separated element is blank
    (whitespace only), so "", "  " and ", ," are empty (Envoy joins repeated
    headers with ","; a client that sends `authorization:` twice arrives as
    ","); an array or object whose every element is itself empty. false and 0
    are values. Walked without recursion: a deep document cannot exhaust the
    stack.
    """
    pending = [value]
    while pending:
        node = pending.pop()
        if node is None:
            continue
        if isinstance(node, str):
            if any(not _blank(part) for part in node.split(",")):
                return False
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
        else:
            return False  # booleans and numbers
    return True


def _blank(text: str) -> bool:
    # str.isspace covers HTTP's optional whitespace and every Unicode space.
    return text == "" or text.isspace()


def missing_signal(
    document: dict[str, Any], required: Sequence[JsonPointer], *, unattested: str | None = None
) -> str | None:
    """Why the first unmet required signal is unmet (a deny's detail), else None.

    ``unattested`` says why this document cannot vouch for what only Envoy can
    attest (None for a gRPC check from Envoy): then a pointer to such a fact is
    unmet, whatever the document holds there.
    """
    for pointer in required:
        if unattested is not None and pointer.envoy_attested:
            return f"required signal {pointer.text} can only come from Envoy's gRPC check: {unattested}"
        if carries_nothing(pointer.resolve(document)):
            return f"required signal {pointer.text} is missing or carries nothing"
    return None
