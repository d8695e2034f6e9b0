"""Build CheckRequests the way Envoy sends them, for tests."""

from __future__ import annotations

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest


def check_request(
    method: str = "GET",
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    body: str | None = None,
    raw_body: bytes | None = None,
    host: str = "app.example",
    principal: str = "",
    scheme: str = "http",
) -> CheckRequest:
    request = CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "10.0.0.7"
    attrs.source.address.socket_address.port_value = 41522
    if principal:
        attrs.source.principal = principal
    attrs.destination.address.socket_address.address = "10.0.0.2"
    attrs.destination.address.socket_address.port_value = 8000
    attrs.request.time.seconds = 1767225600
    http = attrs.request.http
    http.id = "5677206579866366839"
    http.method = method
    http.path = path
    http.host = host
    http.scheme = scheme
    http.protocol = "HTTP/1.1"
    all_headers = {":method": method, ":path": path, ":authority": host, ":scheme": scheme}
    all_headers.update(headers or {})
    if body is not None or raw_body is not None:
        size = len(body.encode()) if body is not None else len(raw_body or b"")
        all_headers.setdefault("content-length", str(size))
        all_headers.setdefault("x-envoy-auth-partial-body", "false")
        http.size = size
        if body is not None:
            http.body = body
        else:
            http.raw_body = raw_body or b""
    for name, value in all_headers.items():
        http.headers[name] = value
    return request
