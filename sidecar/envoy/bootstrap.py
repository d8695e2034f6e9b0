"""Envoy's bootstrap configuration, rendered from the project's templates.

The templates (`templates/envoy.yaml` for ext_authz over gRPC, `templates/envoy-http.yaml`
for HTTP mode) ship with the package, so `opa-sidecar inject` renders them wherever the
sidecar is installed; `python -m deploy.render` writes the repository's committed
configurations from the same files. Each has `${NAME}` placeholders, one per address;
everything else is fixed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

TEMPLATES: Traversable = files(__package__) / "templates"
ENVOY_TEMPLATE: Traversable = TEMPLATES / "envoy.yaml"
ENVOY_HTTP_TEMPLATE: Traversable = TEMPLATES / "envoy-http.yaml"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class RenderError(ValueError):
    """A value that cannot go into the template (the message names it)."""


@dataclass(frozen=True)
class EnvoyAddresses:
    """Where things are, as the sidecar's flags spell addresses. Defaults: one pod
    (or one docker compose network namespace) where everything but the listener is
    on loopback."""

    listen: str = "0.0.0.0:10000"  # where clients connect
    upstream: str = "127.0.0.1:8080"  # the application behind Envoy
    # opa-sidecar's --grpc-addr (--http-addr in HTTP mode): HOST:PORT or unix:///path
    sidecar: str = "127.0.0.1:9191"
    admin: str = "127.0.0.1:9901"  # Envoy's admin interface; loopback only


def socket_address(text: str, *, what: str, allow_unix: bool = False) -> str:
    """`HOST:PORT` (IP literal, `[v6]:PORT`) or `unix:///path` as an Envoy Address in YAML flow style."""
    if text.startswith("unix://"):
        path = text.removeprefix("unix://")
        if not allow_unix or not path.startswith("/"):
            raise RenderError(f"{what}: {text!r} is not an allowed address here")
        return f"{{ pipe: {{ path: {json.dumps(path)} }} }}"
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RenderError(f"{what}: {text!r} is not IP:PORT (Envoy's STATIC clusters need an IP)") from None
    if not sep or not port.isdigit() or int(port) > 65535:
        raise RenderError(f"{what}: {text!r} has no valid port")
    return f"{{ socket_address: {{ address: {json.dumps(host)}, port_value: {int(port)} }} }}"


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every `${NAME}`; a placeholder without a value, or a value without a
    placeholder, is an error (a typo must not leave a half-rendered file)."""
    names = set(_PLACEHOLDER.findall(template))
    if missing := names - values.keys():
        raise RenderError(f"no value for {', '.join(sorted(missing))}")
    if unused := values.keys() - names:
        raise RenderError(f"the template has no placeholder {', '.join(sorted(unused))}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render_envoy(addresses: EnvoyAddresses | None = None, template: Traversable = ENVOY_TEMPLATE) -> str:
    a = addresses or EnvoyAddresses()
    admin_host = a.admin.rpartition(":")[0].strip("[]")
    if not _is_loopback(admin_host):
        raise RenderError(f"admin: {a.admin!r} is not a loopback address")
    return fill(
        template.read_text(encoding="utf-8"),
        {
            "LISTEN": socket_address(a.listen, what="listen"),
            "UPSTREAM": socket_address(a.upstream, what="upstream"),
            "SIDECAR": socket_address(a.sidecar, what="sidecar", allow_unix=True),
            "ADMIN": socket_address(a.admin, what="admin"),
        },
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
