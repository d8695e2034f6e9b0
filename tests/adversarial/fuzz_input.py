"""Fuzz the input builder: arbitrary bytes -> CheckRequest -> `build_input` -> the JSON body
sent to OPA. The only acceptable failures are a protobuf DecodeError (the sidecar answers
bad_request before building anything) and BadRequest; anything else is a crash.

    python -m tests.adversarial.fuzz_input -max_total_time=600 [CORPUS_DIR]

Half the inputs are parsed as a serialized CheckRequest as they are; the other half are
read field by field (path, headers, body, content type) into a request, so the path,
query and body parsers are reached without first guessing a valid protobuf encoding.
Without a corpus directory, one is made from a few realistic requests. Other arguments
are libFuzzer's (`-help=1`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
from google.protobuf.message import DecodeError

# Imported first, so that only the module under test is instrumented (instrumenting the
# protobuf runtime takes seconds and guides nothing).
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from tests.adversarial.fuzz_seeds import input_seeds, write_corpus
from tests.check_requests import check_request

with atheris.instrument_imports():
    from sidecar.envoy.input import BadRequest, build_input, opa_request_body

_CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "multipart/form-data; boundary=",
    "application/grpc",
    "text/plain",
]


def _structured(fdp: atheris.FuzzedDataProvider) -> CheckRequest:
    content_type = fdp.PickValueInList(_CONTENT_TYPES)
    headers = {
        "content-type": content_type if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(30),
        "x-envoy-auth-partial-body": fdp.PickValueInList(["false", "true", ""]),
    }
    if fdp.ConsumeBool():
        headers["content-length"] = fdp.ConsumeUnicodeNoSurrogates(8)
    path = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    request = check_request("POST", path, headers=headers, raw_body=body)
    if fdp.ConsumeBool():
        # The same body as a string field, when it is text.
        try:
            request.attributes.request.http.body = body.decode()
            request.attributes.request.http.raw_body = b""
        except UnicodeDecodeError:
            pass
    return request


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        try:
            request = CheckRequest.FromString(fdp.ConsumeBytes(fdp.remaining_bytes()))
        except DecodeError:
            return
    else:
        request = _structured(fdp)
    for parse_body in (True, False):
        try:
            document = build_input(request, parse_body=parse_body)
        except BadRequest:
            continue
        opa_request_body(document)


def main(argv: list[str]) -> None:
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = write_corpus(Path(tempfile.mkdtemp(prefix="fuzz-input-")), input_seeds())
        argv = [*argv, str(corpus)]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
