"""Fuzz the result interpreter: arbitrary bytes as OPA's answer body -> `loads_object` ->
`interpret` -> the CheckResponse. StrictJSONError is the only acceptable failure, and an
Allow must come from a result that says yes (`true`, or an object whose `allowed` is `true`).

    python -m tests.adversarial.fuzz_result -max_total_time=600 [CORPUS_DIR]

Half the inputs are taken as the answer body as they are; the other half build a JSON
value from the fuzzer's bytes, with the keys the interpreter knows, so its field checks
are reached without first guessing valid JSON. Without a corpus directory, one is made
from a few real answers. Other arguments are libFuzzer's (`-help=1`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

# Imported first, so that only the modules under test are instrumented (instrumenting
# the protobuf runtime takes seconds and guides nothing).
from sidecar.envoy.response import build_response
from sidecar.verdict import Allow
from tests.adversarial.fuzz_seeds import result_seeds, write_corpus

with atheris.instrument_imports():
    from sidecar.opa.result import interpret
    from sidecar.opa.strict_json import StrictJSONError, loads_object

_KEYS = [
    "result", "allowed", "headers", "response_headers_to_add", "request_headers_to_remove",
    "query_parameters_to_set", "query_parameters_to_remove", "dynamic_metadata", "body",
    "http_status", "decision_id", "x-user", "X-Upper", "",
]  # fmt: skip


def _value(fdp: atheris.FuzzedDataProvider, depth: int) -> Any:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(4)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind in (4, 5):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {
        fdp.PickValueInList(_KEYS) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(8): _value(
            fdp, depth + 1
        )
        for _ in range(fdp.ConsumeIntInRange(0, 5))
    }


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        result = _value(fdp, 0)
        if isinstance(result, dict) and fdp.ConsumeBool():
            result["allowed"] = fdp.ConsumeBool()
        body = json.dumps({"result": result}).encode()
    try:
        answer = loads_object(body)
    except StrictJSONError:
        return
    verdict = interpret(answer)
    if isinstance(verdict, Allow):
        said = answer["result"]
        assert said is True or (isinstance(said, dict) and said["allowed"] is True), body
    build_response(verdict, "fuzz").SerializeToString()


def main(argv: list[str]) -> None:
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = write_corpus(Path(tempfile.mkdtemp(prefix="fuzz-result-")), result_seeds())
        argv = [*argv, str(corpus)]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
