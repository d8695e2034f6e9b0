"""The request every benchmark sends: one realistic CheckRequest, as Envoy
would build it for an API call, and the forms the load generators need."""

from __future__ import annotations

import struct

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
# What the example policy allows (GET under /public/): R answers an allow
# object with headers, Z's nginx a bare true.
HTTP_PATH = "/public/items/42?page=2&sort=asc"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
# A JWT-sized bearer token: headers like this are what a real check carries.
_TOKEN = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." + "x" * 180 + "." + "y" * 342


def check_request() -> CheckRequest:
    request = CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "10.0.0.7"
    attrs.source.address.socket_address.port_value = 41522
    attrs.destination.address.socket_address.address = "10.0.0.2"
    attrs.destination.address.socket_address.port_value = 8000
    attrs.request.time.seconds = 1767225600
    attrs.request.time.nanos = 123456000
    http = attrs.request.http
    http.id = "5677206579866366839"
    http.method = "GET"
    http.path = HTTP_PATH
    http.host = "api.example.com"
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    headers = {
        ":authority": "api.example.com",
        ":method": "GET",
        ":path": HTTP_PATH,
        ":scheme": "http",
        "accept": "application/json",
        "accept-encoding": "gzip, deflate, br",
        "authorization": f"Bearer {_TOKEN}",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        "x-forwarded-for": "203.0.113.9",
        "x-forwarded-proto": "https",
        "x-request-id": "3f6c1d9e-8a4b-4c2e-9f1a-7b5d3e2c1a0f",
        "x-envoy-expected-rq-timeout-ms": "15000",
    }
    for name, value in headers.items():
        http.headers[name] = value
    attrs.context_extensions["virtual_host"] = "api"
    return request


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def check_request_frame() -> bytes:
    return grpc_frame(check_request().SerializeToString())


def opa_request_body() -> bytes:
    """What the sidecar POSTs to OPA for this request: the direct-POST baseline
    sends the same bytes."""
    from sidecar.envoy.input import build_input, opa_request_body

    return opa_request_body(build_input(check_request()))
