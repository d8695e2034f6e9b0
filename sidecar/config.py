"""Settings: one frozen object from command-line flags and OPA_SIDECAR_* env vars.

Each flag ``--some-flag`` can also be set as ``OPA_SIDECAR_SOME_FLAG``; the flag
wins. Every value is validated here, so a bad setting stops the process at
start with one line naming it, never a surprise at the first request.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sidecar.deny_memory_options import (
    DEFAULT_REASONS,
    MODES,
    key_file,
    parse_reasons,
    parse_store_url,
    parse_window,
)
from sidecar.envoy.grpc_body import GrpcMethods
from sidecar.regular_file import FileRefused, check_regular_file
from sidecar.signals import JsonPointer, parse_pointers
from sidecar.verdict import DenyReason

ENV_PREFIX = "OPA_SIDECAR_"


class ConfigError(ValueError):
    """A setting is invalid; the message names it and says what is wrong."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """``host:port`` for TCP or ``unix:///path`` for a unix socket."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OpaURL:
    """Where OPA listens: scheme http/https with host, port and path prefix, or a unix socket."""

    scheme: str
    host: str
    port: int
    path_prefix: str = ""
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path_prefix}"


@dataclass(frozen=True, slots=True)
class Settings:
    opa_url: OpaURL
    grpc_addr: ListenAddress = ListenAddress("127.0.0.1", 9191)
    unix_socket_mode: int = 0o660  # of every unix socket the sidecar listens on
    decision_path: str = "envoy/authz/allow"
    opa_timeout: float = 0.15
    max_inflight: int = 1024
    strict_builtin_errors: bool = True
    skip_request_body_parse: bool = False
    opa_max_response_bytes: int = 1 << 20
    log_level: str = "info"
    require: tuple[JsonPointer, ...] = ()
    require_tls_peer: bool = False
    http_addr: ListenAddress = ListenAddress("127.0.0.1", 9192)
    probe_addr: ListenAddress = ListenAddress("127.0.0.1", 9193)
    http_max_header_bytes: int = 64 << 10
    http_max_headers: int = 128
    http_max_body_bytes: int = 64 << 10
    http_max_connections: int = 128
    http_header_timeout: float = 2.0
    http_body_timeout: float = 2.0
    http_idle_timeout: float = 3630.0
    ready_without_opa: bool = False
    grpc_reflection: bool = False
    decision_log: str = "-"
    decision_log_backlog_bytes: int = 4 << 20
    log_input: bool = False
    mask_headers: tuple[str, ...] = ()
    mask_pointers: tuple[JsonPointer, ...] = ()
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    grpc_client_ca: str | None = None
    opa_ca_file: str | None = None
    opa_client_cert: str | None = None
    opa_client_key: str | None = None
    opa_token_file: str | None = None
    shutdown_grace: float = 5.0
    http_failure_status: int = 403
    shadow_decision_path: str | None = None
    max_request_bytes: int = 4 << 20
    envoy_max_request_bytes: int = 8192
    proto_descriptor: GrpcMethods | None = None
    workers: int = 1
    deny_memory: float = 0.0  # seconds; 0: off
    deny_memory_mode: str = "hold"
    deny_memory_reasons: frozenset[DenyReason] = frozenset(parse_reasons(DEFAULT_REASONS.split(",")))
    caller_pointers: tuple[JsonPointer, ...] = (JsonPointer.parse("/attributes/source/principal"),)
    action_pointers: tuple[JsonPointer, ...] = (
        JsonPointer.parse("/attributes/request/http/method"),
        JsonPointer.parse("/parsed_path"),
    )
    credential_pointers: tuple[JsonPointer, ...] = (
        JsonPointer.parse("/attributes/request/http/headers/authorization"),
    )
    deny_memory_capacity: int = 100_000
    deny_memory_store: str | None = None
    deny_memory_store_timeout: float = 0.02
    deny_memory_store_failure: str = "deny"
    deny_memory_key_file: str | None = None


# -- value parsers: each takes the raw string and raises ValueError with a reason


def parse_listen_address(raw: str) -> ListenAddress:
    if raw.startswith("unix://"):
        path = raw[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError("a unix socket needs an absolute path: unix:///path/to.sock")
        return ListenAddress(unix_path=path)
    host, sep, port = raw.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT or unix:///path")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return ListenAddress(host, _port(port))


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"port {raw!r} is not a number from 1 to 65535")
    return int(raw)


def parse_opa_url(raw: str) -> OpaURL:
    if raw.startswith("unix://"):
        path = raw[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError("a unix socket needs an absolute path: unix:///path/to/opa.sock")
        return OpaURL("http", "localhost", 0, unix_path=path)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http://, https:// or unix://")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the URL; use --opa-token-file")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    prefix = parts.path.rstrip("/")
    if prefix and not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+", prefix):
        raise ValueError(f"path prefix {prefix!r} is not a plain URL path")
    default_port = 443 if parts.scheme == "https" else 80
    return OpaURL(parts.scheme, parts.hostname, port or default_port, prefix)


def parse_decision_path(raw: str) -> str:
    path = raw.strip("/")
    if not path:
        raise ValueError("must name a rule, e.g. envoy/authz/allow")
    segments = path.split("/")
    if any(not s for s in segments):
        raise ValueError("has an empty segment")
    if any('"' in s or any(c.isspace() for c in s) for s in segments):
        raise ValueError("segments must not contain quotes or spaces")
    return path


def optional_decision_path(raw: str) -> str | None:
    return parse_decision_path(raw) if raw else None


def _positive_seconds(limit: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number of seconds") from None
        if not math.isfinite(value) or value <= 0 or value > limit:
            raise ValueError(f"must be more than 0 and at most {limit:g} seconds")
        return value

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")
        return value

    return parse


def parse_file_mode(raw: str) -> int:
    """Permission bits in octal (`660`, `0660`, `0o660`); no setuid, setgid or sticky bit."""
    digits = raw.strip().removeprefix("0o")
    if not digits or any(c not in "01234567" for c in digits):
        raise ValueError("is not an octal file mode such as 0660")
    mode = int(digits, 8)
    if mode > 0o777:
        raise ValueError("must be at most 0777 (read, write and execute bits only)")
    return mode


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def readable_file(raw: str) -> str | None:
    """A path that can be opened now ("" means not set)."""
    if not raw:
        return None
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    return raw


def regular_file(raw: str) -> str | None:
    """A regular file that can be read now ("" means not set). Opened without
    waiting: opening a FIFO for reading would wait for a writer."""
    if not raw:
        return None
    try:
        check_regular_file(raw)
    except FileRefused as refused:
        raise ValueError(str(refused)) from None
    return raw


def optional_descriptor_set(raw: str) -> GrpcMethods | None:
    """The gRPC methods of a FileDescriptorSet file ("" means not set)."""
    return GrpcMethods.from_file(raw) if raw else None


def writable_log(raw: str) -> str:
    """'-' for stdout, else a file that can be appended to now."""
    if raw in ("", "-"):
        return "-"
    try:
        with open(raw, "ab"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot append to it: {exc.strerror or exc}") from None
    return raw


def header_names(raw: Sequence[str]) -> tuple[str, ...]:
    names = tuple(item.strip().lower() for item in raw if item.strip())
    for name in names:
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9a-z]+", name):
            raise ValueError(f"{name!r} is not a header name")
    return names


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.lower()

    return parse


@dataclass(frozen=True, slots=True)
class Option:
    flag: str  # "--opa-url"
    field: str  # Settings attribute
    parse: Callable[[str], Any]
    help: str
    default: str | None = None  # raw form; None = required
    is_switch: bool = False  # a flag without a value sets "true"
    repeatable: bool = False  # a list: the flag repeats, the env var is comma-separated
    echo: bool = True  # quote the bad value in errors (off where it may hold a secret)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag[2:].upper().replace("-", "_")


SERVE_OPTIONS: tuple[Option, ...] = (
    Option(
        "--opa-url",
        "opa_url",
        parse_opa_url,
        "OPA's base URL: http://host:port, https://host:port (optionally /prefix) or unix:///path.sock",
        echo=False,
    ),
    Option(
        "--grpc-addr",
        "grpc_addr",
        parse_listen_address,
        "where the ext_authz gRPC service listens: HOST:PORT or unix:///path",
        "127.0.0.1:9191",
    ),
    Option(
        "--unix-socket-mode",
        "unix_socket_mode",
        parse_file_mode,
        "file mode (octal) of the unix sockets the sidecar listens on; connecting needs write "
        "permission, so 0660 admits the socket's owner and group alone",
        "0660",
    ),
    Option(
        "--decision-path",
        "decision_path",
        parse_decision_path,
        "the rule to ask OPA for, as in POST /v1/data/<path>",
        "envoy/authz/allow",
    ),
    Option(
        "--opa-timeout",
        "opa_timeout",
        _positive_seconds(60),
        "seconds a check may wait for OPA; the caller's gRPC deadline can shorten it",
        "0.15",
    ),
    Option(
        "--max-inflight",
        "max_inflight",
        _int_range(1, 1_000_000),
        "checks in progress at once; more are denied at once (reason overloaded)",
        "1024",
    ),
    Option(
        "--lenient-builtin-errors",
        "strict_builtin_errors",
        lambda raw: not parse_bool(raw),
        "let OPA treat a failing builtin as undefined instead of an error (not recommended)",
        "false",
        is_switch=True,
    ),
    Option(
        "--skip-request-body-parse",
        "skip_request_body_parse",
        parse_bool,
        "leave parsed_body and truncated_body out of the input document",
        "false",
        is_switch=True,
    ),
    Option(
        "--max-request-bytes",
        "max_request_bytes",
        _int_range(1024, 1 << 30),
        "largest CheckRequest accepted (headers and buffered body); a larger one is denied "
        "(bad_request, HTTP 413) before it is parsed",
        str(4 << 20),
    ),
    Option(
        "--envoy-max-request-bytes",
        "envoy_max_request_bytes",
        _int_range(0, 1 << 30),
        "Envoy's with_request_body.max_request_bytes (0: Envoy forwards no body). A forwarded body "
        "that reaches it without a content-length saying it is complete counts as truncated, and a "
        "longer one is denied (bad_request, HTTP 413)",
        "8192",
    ),
    Option(
        "--proto-descriptor",
        "proto_descriptor",
        optional_descriptor_set,
        "FileDescriptorSet (protoc --descriptor_set_out --include_imports) of the gRPC services behind "
        "Envoy: application/grpc request messages become parsed_body; a gRPC call it cannot decode "
        "exactly is denied (bad_request). Needs Envoy's with_request_body.pack_as_bytes",
        "",
    ),
    Option(
        "--opa-max-response-bytes",
        "opa_max_response_bytes",
        _int_range(64, 1 << 30),
        "largest OPA response body accepted; a larger one is a deny",
        str(1 << 20),
    ),
    Option(
        "--log-level",
        "log_level",
        _choice("debug", "info", "warning", "error"),
        "log level of the process log (decisions are logged separately)",
        "info",
    ),
    Option(
        "--require",
        "require",
        parse_pointers,
        "JSON pointer into the input document that must be present and non-empty, else the check is "
        "denied (missing_signal) without asking OPA; repeatable",
        "",
        repeatable=True,
    ),
    Option(
        "--require-tls-peer",
        "require_tls_peer",
        parse_bool,
        "deny (missing_signal) any check whose source has no verified peer principal",
        "false",
        is_switch=True,
    ),
    Option(
        "--http-addr",
        "http_addr",
        parse_listen_address,
        "where ext_authz HTTP mode and the JSON check API (POST /v1/check) are served: HOST:PORT or "
        "unix:///path; keep it on loopback or a unix socket",
        "127.0.0.1:9192",
    ),
    Option(
        "--probe-addr",
        "probe_addr",
        parse_listen_address,
        "where /healthz, /readyz and /metrics are served: HOST:PORT or unix:///path",
        "127.0.0.1:9193",
    ),
    Option(
        "--http-max-header-bytes",
        "http_max_header_bytes",
        _int_range(1024, 8 << 20),
        "largest request line plus headers on --http-addr; a larger request is denied (HTTP 431)",
        str(64 << 10),
    ),
    Option(
        "--http-max-headers",
        "http_max_headers",
        _int_range(8, 10_000),
        "most headers in one request on --http-addr; more are denied (HTTP 431)",
        "128",
    ),
    Option(
        "--http-max-body-bytes",
        "http_max_body_bytes",
        _int_range(1024, 64 << 20),
        "largest request body on --http-addr; a larger one is denied (HTTP 413)",
        str(64 << 10),
    ),
    Option(
        "--http-max-connections",
        "http_max_connections",
        _int_range(1, 100_000),
        "open connections on --http-addr; one more evicts one not answering a whole request",
        "128",
    ),
    Option(
        "--http-header-timeout",
        "http_header_timeout",
        _positive_seconds(300),
        "seconds from a request's first byte to the end of its headers on the HTTP listeners; "
        "later is denied (HTTP 408)",
        "2",
    ),
    Option(
        "--http-body-timeout",
        "http_body_timeout",
        _positive_seconds(300),
        "seconds from the end of a request's headers to the end of its body on --http-addr; "
        "later is denied (HTTP 408)",
        "2",
    ),
    Option(
        "--http-idle-timeout",
        "http_idle_timeout",
        _positive_seconds(86400),
        "seconds a kept-alive connection with no request stays open on the HTTP listeners; longer "
        "than Envoy's one-hour upstream idle timeout, so Envoy closes its pooled connections first",
        "3630",
    ),
    Option(
        "--ready-without-opa",
        "ready_without_opa",
        parse_bool,
        "report ready (/readyz, gRPC health) even while OPA's /health does not answer 200",
        "false",
        is_switch=True,
    ),
    Option(
        "--grpc-reflection",
        "grpc_reflection",
        parse_bool,
        "serve gRPC server reflection on the gRPC listener",
        "false",
        is_switch=True,
    ),
    Option(
        "--decision-log",
        "decision_log",
        writable_log,
        "where decision log lines go: - for stdout, or a file to append to",
        "-",
    ),
    Option(
        "--decision-log-backlog-bytes",
        "decision_log_backlog_bytes",
        _int_range(64 << 10, 1 << 30),
        "decision log bytes that may wait for a slow destination; while it is full, or after a "
        "failed write, checks are denied (internal_error) because their decision cannot be recorded",
        str(4 << 20),
    ),
    Option(
        "--log-input",
        "log_input",
        parse_bool,
        "add the input document to each decision log line, with secrets masked",
        "false",
        is_switch=True,
    ),
    Option(
        "--mask-header",
        "mask_headers",
        header_names,
        "a request header whose value is masked in logged input, besides the common credential "
        "headers masked by default (authorization, cookie, x-api-key, x-vault-token, ...); repeatable",
        "",
        repeatable=True,
    ),
    Option(
        "--mask-pointer",
        "mask_pointers",
        parse_pointers,
        "JSON pointer into the input document whose value is masked in logged input; repeatable",
        "",
        repeatable=True,
    ),
    Option(
        "--grpc-tls-cert",
        "grpc_tls_cert",
        readable_file,
        "PEM certificate chain of the gRPC listener (enables TLS)",
        "",
    ),
    Option("--grpc-tls-key", "grpc_tls_key", readable_file, "PEM private key of the gRPC listener", ""),
    Option(
        "--grpc-client-ca",
        "grpc_client_ca",
        readable_file,
        "PEM CA bundle: require and verify client certificates on the gRPC listener (mTLS)",
        "",
    ),
    Option(
        "--opa-ca-file",
        "opa_ca_file",
        readable_file,
        "PEM CA bundle that verifies OPA's certificate (https:// only; default: the system's)",
        "",
    ),
    Option(
        "--opa-client-cert",
        "opa_client_cert",
        readable_file,
        "PEM client certificate presented to OPA (https:// only)",
        "",
    ),
    Option("--opa-client-key", "opa_client_key", readable_file, "PEM key of --opa-client-cert", ""),
    Option(
        "--opa-token-file",
        "opa_token_file",
        regular_file,
        "regular file holding a bearer token sent to OPA; re-read when it changes; while it is bad "
        "no token is sent; never logged",
        "",
    ),
    Option(
        "--http-failure-status",
        "http_failure_status",
        _int_range(400, 499),
        "HTTP status of a deny in ext_authz HTTP mode when the policy gave none it may use "
        "(any failure, or a policy status of 200 or 5xx, which Envoy would not treat as a deny)",
        "403",
    ),
    Option(
        "--shadow-decision-path",
        "shadow_decision_path",
        optional_decision_path,
        "a candidate rule asked beside the enforced one; its answer is only compared, counted and "
        "logged, never enforced",
        "",
    ),
    Option(
        "--workers",
        "workers",
        _int_range(1, 64),
        "processes serving the listening sockets (TCP or unix) that the parent binds, each with its "
        "own event loop and OPA connections, supervised by the parent",
        "1",
    ),
    Option(
        "--deny-memory",
        "deny_memory",
        parse_window,
        "seconds a deny is remembered for its caller (0: off); see --deny-memory-mode",
        "0",
    ),
    Option(
        "--deny-memory-mode",
        "deny_memory_mode",
        _choice(*MODES),
        "observe: only mark a denied caller's later checks; hold: deny its retries of the denied action; "
        "freeze: deny all its checks. In hold and freeze another credential is denied too",
        "hold",
    ),
    Option(
        "--deny-memory-reasons",
        "deny_memory_reasons",
        parse_reasons,
        "deny reasons that are remembered (comma-separated)",
        DEFAULT_REASONS,
        repeatable=True,
    ),
    Option(
        "--caller",
        "caller_pointers",
        parse_pointers,
        "JSON pointer into the input document that identifies the caller for the deny memory; repeatable",
        "/attributes/source/principal",
        repeatable=True,
    ),
    Option(
        "--action",
        "action_pointers",
        parse_pointers,
        "JSON pointer into the input document that identifies the action for the deny memory; repeatable",
        "/attributes/request/http/method,/parsed_path",
        repeatable=True,
    ),
    Option(
        "--credential",
        "credential_pointers",
        parse_pointers,
        "JSON pointer into the input document to the credential the caller presents (kept only as a "
        "keyed hash); repeatable",
        "/attributes/request/http/headers/authorization",
        repeatable=True,
    ),
    Option(
        "--deny-memory-capacity",
        "deny_memory_capacity",
        _int_range(2, 10_000_000),
        "entries the in-process deny memory keeps (two per remembered deny); at capacity the oldest "
        "goes and its caller is asked again",
        "100000",
    ),
    Option(
        "--deny-memory-store",
        "deny_memory_store",
        parse_store_url,
        "Redis-protocol server that shares the deny memory across workers and replicas: "
        "redis://host:port/db, rediss://... (TLS) or unix:///path.sock",
        "",
        echo=False,
    ),
    Option(
        "--deny-memory-store-timeout",
        "deny_memory_store_timeout",
        _positive_seconds(1),
        "seconds a check waits for the deny memory store (within the check's budget)",
        "0.02",
    ),
    Option(
        "--deny-memory-store-failure",
        "deny_memory_store_failure",
        _choice("deny", "local"),
        "when the store does not answer in time: deny the check (deny_memory_unavailable), or use "
        "this process's own memory",
        "deny",
    ),
    Option(
        "--deny-memory-key-file",
        "deny_memory_key_file",
        key_file,
        "file holding the key (16 bytes or more) that hashes callers and credentials; the same in every "
        "replica sharing a store (default: a random key per process)",
        "",
    ),
    Option(
        "--shutdown-grace",
        "shutdown_grace",
        _positive_seconds(600),
        "seconds to answer in-flight checks after SIGTERM before denying what remains",
        "5",
    ),
)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for opt in options:
        required = " (required)" if opt.default is None else f" (default {opt.default})"
        text = f"{opt.help}{required}; env {opt.env}"
        if opt.is_switch:
            parser.add_argument(opt.flag, dest=opt.field, action="store_const", const="true", help=text)
        elif opt.repeatable:
            parser.add_argument(opt.flag, dest=opt.field, metavar="VALUE", action="append", help=text)
        else:
            parser.add_argument(opt.flag, dest=opt.field, metavar="VALUE", help=text)


def resolve(
    args: argparse.Namespace, options: Sequence[Option], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Flag, else env var, else default; each parsed. Raises ConfigError naming the setting."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for opt in options:
        raw: Any = getattr(args, opt.field, None)
        source = opt.flag
        if raw is None and opt.env in env:
            raw, source = env[opt.env], opt.env
        if raw is None:
            if opt.default is None:
                raise ConfigError(f"{opt.flag} (or {opt.env}) is required: {opt.help}")
            raw = opt.default
            source = f"{opt.flag} default"
        if opt.repeatable and isinstance(raw, str):
            raw = raw.split(",") if raw else []
        try:
            values[opt.field] = opt.parse(raw)
        except ValueError as exc:
            shown = f" {raw!r}" if opt.echo else ""
            raise ConfigError(f"invalid {source}{shown}: {exc}") from None
    return values


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    settings = Settings(**resolve(args, SERVE_OPTIONS, env))
    check_combinations(settings)
    return settings


def check_combinations(s: Settings) -> None:
    """Settings that are only valid together."""
    if bool(s.grpc_tls_cert) != bool(s.grpc_tls_key):
        raise ConfigError("--grpc-tls-cert and --grpc-tls-key go together: set both or neither")
    if s.grpc_client_ca and not s.grpc_tls_cert:
        raise ConfigError("--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key (mTLS is on top of TLS)")
    if bool(s.opa_client_cert) != bool(s.opa_client_key):
        raise ConfigError("--opa-client-cert and --opa-client-key go together: set both or neither")
    if s.opa_url.scheme != "https" and (s.opa_ca_file or s.opa_client_cert):
        raise ConfigError("--opa-ca-file and --opa-client-cert need an https:// --opa-url")
    if s.proto_descriptor is not None and s.skip_request_body_parse:
        raise ConfigError("--proto-descriptor has no use with --skip-request-body-parse: set one or neither")
    if s.shadow_decision_path is not None and s.shadow_decision_path == s.decision_path:
        raise ConfigError("--shadow-decision-path must differ from --decision-path")
    check_deny_memory(s)
    # With --workers the parent binds TCP and unix listeners alike; the workers inherit them.
    listeners = (s.grpc_addr, s.http_addr, s.probe_addr)
    fixed = [addr for addr in listeners if addr.unix_path is not None or addr.port != 0]
    if len(set(fixed)) != len(fixed):
        raise ConfigError("--grpc-addr, --http-addr and --probe-addr must all differ")


def check_deny_memory(s: Settings) -> None:
    if s.deny_memory_store is not None and s.deny_memory_key_file is None:
        raise ConfigError(
            "--deny-memory-store needs --deny-memory-key-file: every worker and replica sharing the "
            "store must hash callers and credentials with the same key"
        )
    # Workers are separate processes: only the store is shared between them.
    if s.deny_memory > 0 and s.workers > 1 and s.deny_memory_store is None:
        raise ConfigError(
            "--deny-memory with --workers above 1 needs --deny-memory-store: a caller's retry may land "
            "on any worker, and only the store is shared between them"
        )
