"""Render the Envoy template and the files generated from it.

    python -m deploy.render                      # rewrite every generated file
    python -m deploy.render --check              # exit 1 if a generated file is stale
    python -m deploy.render envoy --listen 127.0.0.1:8000 --sidecar unix:///run/authz.sock
    python -m deploy.render envoy --mode http    # ext_authz HTTP mode (the sidecar's --http-addr)

The templates (`deploy/envoy/templates/envoy.yaml` for ext_authz over gRPC,
`envoy-http.yaml` for HTTP mode) have `${NAME}` placeholders, one per address;
everything else is fixed. The committed renders (the Envoy files docker compose
mounts, `deploy/envoy/envoy-http-{tcp,unix}.yaml`, the Kubernetes ConfigMaps of Envoy's
configuration, `rego/` and the demo app, and the list of policy files in the Deployment)
are produced here; the tests and the demo render the same templates with their own
ports, so all of them run one configuration per mode.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEPLOY_DIR.parent
ENVOY_TEMPLATE = DEPLOY_DIR / "envoy" / "templates" / "envoy.yaml"
ENVOY_HTTP_TEMPLATE = DEPLOY_DIR / "envoy" / "templates" / "envoy-http.yaml"
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


def render_envoy(addresses: EnvoyAddresses | None = None, template: Path = ENVOY_TEMPLATE) -> str:
    a = addresses or EnvoyAddresses()
    admin_host = a.admin.rpartition(":")[0].strip("[]")
    if not _is_loopback(admin_host):
        raise RenderError(f"admin: {a.admin!r} is not a loopback address")
    return fill(
        template.read_text(),
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


# --- the committed renders ---------------------------------------------------

UNIX_SOCKET_ADDRESSES = EnvoyAddresses(sidecar="unix:///run/opa-sidecar/authz.sock")
ENVOY_VARIANTS: Mapping[str, EnvoyAddresses] = {
    "envoy/envoy-grpc-tcp.yaml": EnvoyAddresses(),
    "envoy/envoy-grpc-unix.yaml": UNIX_SOCKET_ADDRESSES,
}
# ext_authz HTTP mode: Envoy asks the sidecar's --http-addr (default 127.0.0.1:9192).
HTTP_MODE_ADDRESSES = EnvoyAddresses(sidecar="127.0.0.1:9192")
ENVOY_HTTP_VARIANTS: Mapping[str, EnvoyAddresses] = {
    "envoy/envoy-http-tcp.yaml": HTTP_MODE_ADDRESSES,
    "envoy/envoy-http-unix.yaml": replace(HTTP_MODE_ADDRESSES, sidecar="unix:///run/opa-sidecar/http.sock"),
}
# `python -m deploy.render envoy --mode NAME`: the template and its default addresses.
ENVOY_MODES: Mapping[str, tuple[Path, EnvoyAddresses]] = {
    "grpc": (ENVOY_TEMPLATE, EnvoyAddresses()),
    "http": (ENVOY_HTTP_TEMPLATE, HTTP_MODE_ADDRESSES),
}
KUBERNETES_CONFIGMAPS = "kubernetes/configmaps.yaml"
KUBERNETES_ENVOY_VARIANT = "envoy/envoy-grpc-unix.yaml"
POLICY_DIR = REPO_ROOT / "rego"
DEMO_APP = DEPLOY_DIR / "echo_upstream.py"


def _generated_header(source: str, addresses: EnvoyAddresses | None = None) -> str:
    lines = [
        f"# Generated by `python -m deploy.render` from {source}.",
        "# Edit the source, then run it again.",
    ]
    if addresses is not None:
        lines.append("# " + ", ".join(f"{k}={v}" for k, v in asdict(addresses).items()))
    return "\n".join(lines) + "\n"


POLICY_SUFFIXES = frozenset({".rego", ".json", ".yaml", ".yml"})


def policy_paths() -> dict[str, str]:
    """ConfigMap key -> path under `rego/` of every file OPA loads (Rego tests left out).
    Keys cannot hold `/`, so `envoy/data.json` becomes `envoy__data.json`; the pod's volume
    puts each key back at its path, since OPA places a data file by its directory."""
    paths: dict[str, str] = {}
    for path in sorted(POLICY_DIR.rglob("*")):
        if not path.is_file() or path.suffix not in POLICY_SUFFIXES or path.name.endswith("_test.rego"):
            continue
        relative = path.relative_to(POLICY_DIR).as_posix()
        key = relative.replace("/", "__")
        if key in paths or not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
            raise RenderError(f"rego/{relative} cannot be a ConfigMap key ({key!r})")
        paths[key] = relative
    return paths


def policy_files() -> dict[str, str]:
    """ConfigMap key -> content of every policy file."""
    return {key: (POLICY_DIR / relative).read_text() for key, relative in policy_paths().items()}


DEPLOYMENT = "kubernetes/deployment.yaml"
_ITEMS_REGION = re.compile(
    r"(?P<head># This list is written by `python -m deploy.render`\.\n(?P<indent> *)items:\n)"
    r"(?:(?P=indent)  - .*\n)*"
)


def with_policy_items(deployment: str) -> str:
    """The Deployment with its opa-policy volume's items list matching the ConfigMap's keys."""
    region = _ITEMS_REGION.search(deployment)
    if region is None:
        raise RenderError(f"{DEPLOYMENT} has no items list marked as written by deploy.render")
    indent = region["indent"]
    items = "".join(f"{indent}  - {{ key: {key}, path: {path} }}\n" for key, path in policy_paths().items())
    return deployment[: region.start()] + region["head"] + items + deployment[region.end() :]


def _literal_block(text: str, indent: str) -> str:
    # Chomping indicators: `|` keeps exactly one final newline, `|+` all of them, `|-` none.
    if not text.endswith("\n"):
        indicator = "|-"
    elif text.endswith("\n\n"):
        indicator = "|+"
    else:
        indicator = "|"
    body = "".join(f"{indent}{line}\n" if line else "\n" for line in text.splitlines())
    return f"{indicator}\n{body}"


def _configmap(name: str, data: Mapping[str, str], comment: str) -> str:
    entries = "".join(f"  {key}: {_literal_block(value, '    ')}" for key, value in data.items())
    return (
        f"# {comment}\n"
        "apiVersion: v1\nkind: ConfigMap\n"
        f"metadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/part-of: opa-sidecar-demo\n"
        f"data:\n{entries}"
    )


def kubernetes_configmaps() -> str:
    envoy = _generated_header(
        "deploy/envoy/templates/envoy.yaml", ENVOY_VARIANTS[KUBERNETES_ENVOY_VARIANT]
    ) + render_envoy(ENVOY_VARIANTS[KUBERNETES_ENVOY_VARIANT])
    documents = [
        _configmap("envoy-config", {"envoy.yaml": envoy}, "Envoy's bootstrap, the same as deploy/envoy/"),
        _configmap("opa-policy", policy_files(), "The policies and data of rego/ (tests excluded)"),
        _configmap("demo-app", {"echo_upstream.py": DEMO_APP.read_text()}, "The demo application"),
    ]
    return _generated_header("deploy/envoy/templates/envoy.yaml, rego/ and deploy/echo_upstream.py") + (
        "---\n".join(documents)
    )


# deploy/kubernetes-http: deploy/kubernetes with Envoy asking the sidecar in ext_authz HTTP
# mode, over the sidecar's unix socket for HTTP checks (its kustomization patches --http-addr).
KUBERNETES_HTTP_CONFIGMAP = "kubernetes-http/envoy-config.yaml"
KUBERNETES_HTTP_ENVOY_VARIANT = "envoy/envoy-http-unix.yaml"


def kubernetes_http_envoy_configmap() -> str:
    """The envoy-config ConfigMap deploy/kubernetes-http lays over deploy/kubernetes's."""
    addresses = ENVOY_HTTP_VARIANTS[KUBERNETES_HTTP_ENVOY_VARIANT]
    envoy = _generated_header("deploy/envoy/templates/envoy-http.yaml", addresses) + render_envoy(
        addresses, ENVOY_HTTP_TEMPLATE
    )
    comment = "Envoy's bootstrap in ext_authz HTTP mode, the same as deploy/envoy/envoy-http-unix.yaml"
    return _generated_header("deploy/envoy/templates/envoy-http.yaml") + _configmap(
        "envoy-config", {"envoy.yaml": envoy}, comment
    )


def generated_files() -> dict[Path, str]:
    """Every committed file this module writes (wholly or in part), with the content it should have."""
    files = {
        DEPLOY_DIR / name: _generated_header("deploy/envoy/templates/envoy.yaml", addresses)
        + render_envoy(addresses)
        for name, addresses in ENVOY_VARIANTS.items()
    }
    for name, addresses in ENVOY_HTTP_VARIANTS.items():
        files[DEPLOY_DIR / name] = _generated_header(
            "deploy/envoy/templates/envoy-http.yaml", addresses
        ) + render_envoy(addresses, ENVOY_HTTP_TEMPLATE)
    files[DEPLOY_DIR / KUBERNETES_CONFIGMAPS] = kubernetes_configmaps()
    files[DEPLOY_DIR / KUBERNETES_HTTP_CONFIGMAP] = kubernetes_http_envoy_configmap()
    # Hand-written but for the list of policy files.
    files[DEPLOY_DIR / DEPLOYMENT] = with_policy_items((DEPLOY_DIR / DEPLOYMENT).read_text())
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report generated files that are stale")
    commands = parser.add_subparsers(dest="command")
    envoy = commands.add_parser("envoy", help="print the Envoy configuration for other addresses")
    envoy.add_argument(
        "--mode",
        choices=sorted(ENVOY_MODES),
        default="grpc",
        help="how Envoy asks the sidecar (default grpc)",
    )
    http_defaults = asdict(HTTP_MODE_ADDRESSES)
    for field, default in asdict(EnvoyAddresses()).items():
        in_http = "" if http_defaults[field] == default else f"; {http_defaults[field]} with --mode http"
        envoy.add_argument(f"--{field.replace('_', '-')}", help=f"(default {default}{in_http})")
    args = parser.parse_args(argv)
    try:
        if args.command == "envoy":
            template, defaults = ENVOY_MODES[args.mode]
            chosen = {
                field: value for field in asdict(defaults) if (value := getattr(args, field)) is not None
            }
            sys.stdout.write(render_envoy(replace(defaults, **chosen), template))
            return 0
        expected = generated_files()
        stale = [path for path, text in expected.items() if _read(path) != text]
        if args.check:
            for path in stale:
                print(f"stale: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
            return 1 if stale else 0
        for path in stale:
            path.write_text(expected[path])
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
