"""An application behind Envoy that parses every request it gets with real application parsers.

It runs werkzeug's own development server (the WSGI environ Flask gets) and, for each
request, records what it received (method, target, headers in order, raw body bytes,
peer address) and what each parser makes of it: werkzeug (args, form, files, get_json),
python-multipart's form parser, Starlette's Request.form()/json() and FastAPI's rule for
JSON bodies, the standard library's json.loads and urllib.parse.parse_qs/parse_qsl.

A parser's view is a `ParserView`: which kind of body its own dispatch on the content
type takes the request for (json, form, multipart, or none), and the value it parsed
or the error it raised. Records are keyed by the request's marker header, so each
pairs with the OPA input of the same request.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Final

import python_multipart
from starlette.datastructures import UploadFile
from starlette.requests import Request as StarletteRequest
from werkzeug.datastructures import FileStorage
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request as WerkzeugRequest

MARKER_HEADER: Final = "x-differential-marker"
JSON, FORM, MULTIPART = "json", "form", "multipart"
_RAW_HEADERS_KEY: Final = "differential.raw_headers"


@dataclass(frozen=True)
class ParserView:
    """One parser's reading of the body: the kind its dispatch chose (None: it does not
    parse such a body) and the value, or the error that stopped it."""

    kind: str | None
    value: Any = None
    error: str | None = None


@dataclass(frozen=True)
class UpstreamRecord:
    method: str
    target: str  # the request target as received: path and query, still escaped
    path: str  # werkzeug's Request.path (percent-decoded)
    query_string: str
    args: dict[str, list[str]]  # werkzeug Request.args
    query_parse_qs: dict[str, list[str]]
    query_parse_qsl: list[tuple[str, str]]
    query_starlette: dict[str, list[str]]  # Starlette's request.query_params
    headers: list[tuple[str, str]]  # names lower-cased, in arrival order
    body: bytes
    peer: str
    parsers: dict[str, ParserView] = field(default_factory=dict)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class _RecordingHandler(WSGIRequestHandler):
    """werkzeug's handler, keeping the header lines as they arrived (the environ joins repeats)."""

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        environ[_RAW_HEADERS_KEY] = [(name.lower(), value) for name, value in self.headers.items()]
        return environ

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ParsingUpstream:
    """The application on a background thread; `records[marker]` is what it made of a request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Condition()
        self._records: dict[str, UpstreamRecord] = {}
        self._server: BaseWSGIServer = make_server(
            host, 0, self._app, threaded=True, request_handler=_RecordingHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="parsing-upstream", daemon=True
        )

    @property
    def addr(self) -> str:
        return f"{self._server.host}:{self._server.port}"

    def start(self) -> ParsingUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> ParsingUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def record(self, marker: str) -> UpstreamRecord | None:
        with self._lock:
            return self._records.get(marker)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        record = parse_request(environ)
        markers = record.header_values(MARKER_HEADER)
        with self._lock:
            for marker in markers:
                self._records[marker] = record
            self._lock.notify_all()
        payload = b"parsed\n"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
        return [payload]


def parse_request(environ: dict[str, Any]) -> UpstreamRecord:
    body = WerkzeugRequest(environ).get_data()
    # Each parser reads its own copy of the body, as if it were the only one.
    wz = WerkzeugRequest(_with_body(environ, body))
    headers: list[tuple[str, str]] = environ[_RAW_HEADERS_KEY]
    query = environ.get("QUERY_STRING", "")
    content_type = environ.get("CONTENT_TYPE")
    return UpstreamRecord(
        method=environ["REQUEST_METHOD"],
        target=environ["REQUEST_URI"],
        path=wz.path,
        query_string=query,
        args=wz.args.to_dict(flat=False),
        query_parse_qs=urllib.parse.parse_qs(query, keep_blank_values=True),
        query_parse_qsl=urllib.parse.parse_qsl(query, keep_blank_values=True),
        query_starlette=_pairs(list(_starlette_request(environ, headers, body).query_params.multi_items())),
        headers=headers,
        body=body,
        peer=f"{environ['REMOTE_ADDR']}:{environ['REMOTE_PORT']}",
        parsers={
            "werkzeug": _werkzeug_view(wz),
            "python_multipart": _python_multipart_view(content_type, body),
            "starlette": _starlette_view(environ, headers, body),
            "json.loads": _guarded(lambda: _strict_stdlib_json(body), JSON),
            "parse_qs": _guarded(lambda: urllib.parse.parse_qs(_utf8(body), keep_blank_values=True), FORM),
            "parse_qsl": _guarded(
                lambda: _pairs(urllib.parse.parse_qsl(_utf8(body), keep_blank_values=True)), FORM
            ),
        },
    )


def _with_body(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    copy = dict(environ)
    copy["wsgi.input"] = io.BytesIO(body)
    return copy


def _utf8(body: bytes) -> str:
    return body.decode("utf-8")


def _strict_stdlib_json(body: bytes) -> Any:
    # json.loads(bytes) detects UTF-8/16/32 and skips a UTF-8 BOM, as applications calling it do.
    return json.loads(body)


def _pairs(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _guarded(parse: Callable[[], Any], kind: str) -> ParserView:
    """A parser without dispatch of its own, used for the kind the application chose."""
    try:
        return ParserView(kind, parse())
    except Exception as exc:
        return ParserView(kind, error=f"{type(exc).__name__}: {exc}")


def _werkzeug_view(request: WerkzeugRequest) -> ParserView:
    mimetype = request.mimetype
    if request.is_json:
        return _guarded(lambda: request.get_json(silent=False), JSON)
    kind = {"application/x-www-form-urlencoded": FORM, "multipart/form-data": MULTIPART}.get(mimetype)
    if kind is None:
        return ParserView(None)
    try:
        fields = request.form.to_dict(flat=False)
        files = request.files.to_dict(flat=False)
    except Exception as exc:
        return ParserView(kind, error=f"{type(exc).__name__}: {exc}")
    return ParserView(
        kind, _merge_parts(fields, {name: [_file_text(f) for f in fs] for name, fs in files.items()})
    )


def _file_text(storage: FileStorage) -> str:
    return _part_text(storage.stream.read())


def _part_text(content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return "<not utf-8: " + content.hex() + ">"


def _merge_parts(fields: dict[str, list[str]], files: dict[str, list[str]]) -> dict[str, list[str]]:
    merged = {name: list(values) for name, values in fields.items()}
    for name, values in files.items():
        merged.setdefault(name, []).extend(values)
    return merged


def _python_multipart_view(content_type: str | None, body: bytes) -> ParserView:
    """python-multipart's own dispatch (create_form_parser): urlencoded and multipart only."""
    if content_type is None:
        return ParserView(None)
    mime, _ = python_multipart.multipart.parse_options_header(content_type)
    kind = {
        b"application/x-www-form-urlencoded": FORM,
        b"application/x-url-encoded": FORM,
        b"multipart/form-data": MULTIPART,
    }.get(mime)
    if kind is None:
        return ParserView(None)
    fields: dict[str, list[str]] = {}

    def on_field(item: python_multipart.multipart.Field) -> None:
        fields.setdefault(_part_text(item.field_name or b""), []).append(_part_text(item.value or b""))

    def on_file(item: python_multipart.multipart.File) -> None:
        item.file_object.seek(0)
        fields.setdefault(_part_text(item.field_name or b""), []).append(_part_text(item.file_object.read()))

    try:
        python_multipart.parse_form(
            {"Content-Type": content_type.encode("latin-1"), "Content-Length": str(len(body)).encode()},
            io.BytesIO(body),
            on_field,
            on_file,
        )
    except Exception as exc:
        return ParserView(kind, error=f"{type(exc).__name__}: {exc}")
    return ParserView(kind, fields)


def _fastapi_takes_json(content_type: str | None) -> bool:
    """FastAPI's rule for a JSON body: application/json or application/*+json, via email.message."""
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _starlette_view(environ: dict[str, Any], headers: list[tuple[str, str]], body: bytes) -> ParserView:
    content_type = environ.get("CONTENT_TYPE")
    if _fastapi_takes_json(content_type):
        return _guarded(lambda: asyncio.run(_starlette_request(environ, headers, body).json()), JSON)
    kind = None
    if content_type:
        mime = content_type.partition(";")[0].strip().lower()
        kind = {"application/x-www-form-urlencoded": FORM, "multipart/form-data": MULTIPART}.get(mime)
    if kind is None:
        return ParserView(None)
    try:
        form = asyncio.run(_starlette_form(_starlette_request(environ, headers, body)))
    except Exception as exc:
        return ParserView(kind, error=f"{type(exc).__name__}: {exc}")
    return ParserView(kind, form)


def _starlette_request(
    environ: dict[str, Any], headers: list[tuple[str, str]], body: bytes
) -> StarletteRequest:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": "http",
        "path": environ.get("PATH_INFO", ""),
        "raw_path": environ["REQUEST_URI"].partition("?")[0].encode("latin-1"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])),
        "server": None,
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return StarletteRequest(scope, receive)


async def _starlette_form(request: StarletteRequest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    async with request.form() as form:
        for name, value in form.multi_items():
            text = _part_text(await value.read()) if isinstance(value, UploadFile) else value
            out.setdefault(name, []).append(text)
    return out


@contextlib.contextmanager
def parsing_upstream() -> Iterator[ParsingUpstream]:
    with ParsingUpstream() as upstream:
        yield upstream
