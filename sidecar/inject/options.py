"""What `opa-sidecar inject` is asked to do: mode, images, resources, policy source."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MODES = ("envoy", "istio")
# Our containers, by the role the --image and --resource options name them with.
ROLES = ("envoy", "opa-sidecar", "opa")
DEFAULT_IMAGES: Mapping[str, str] = {
    "envoy": "envoyproxy/envoy:v1.40.0",
    "opa-sidecar": "opa-sidecar:0.1.0",
    "opa": "openpolicyagent/opa:1.20.2",
}
# requests and limits as deploy/kubernetes gives them.
DEFAULT_RESOURCES: Mapping[str, Mapping[str, Mapping[str, str]]] = {
    "envoy": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    "opa-sidecar": {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    "opa": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
}
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_RESOURCE = re.compile(r"(?P<role>[a-z-]+)\.(?P<kind>requests|limits)\.(?P<name>cpu|memory)=(?P<value>.+)")
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?", re.IGNORECASE)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class OptionError(ValueError):
    """An option that cannot be used (the message names it)."""


@dataclass(frozen=True)
class BundleSource:
    """A remote OPA bundle: OPA's service URL and the resource path under it."""

    service_url: str
    resource: str


@dataclass(frozen=True)
class InjectOptions:
    mode: str = "envoy"
    app_port: str | None = None  # name or number of the application's port (envoy mode)
    listen_port: int = 10000  # Envoy's listener (envoy mode)
    images: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    resources: Mapping[str, Mapping[str, Mapping[str, str]]] = field(
        default_factory=lambda: {
            role: {k: dict(v) for k, v in r.items()} for role, r in DEFAULT_RESOURCES.items()
        }
    )
    policy_configmap: str = "opa-policy"
    bundle: BundleSource | None = None


def parse_image(text: str) -> tuple[str, str]:
    """`ROLE=IMAGE`; the image must be pinned (a tag or a digest), never an implicit latest."""
    role, sep, image = text.partition("=")
    if not sep or role not in ROLES:
        raise OptionError(f"--image {text!r}: write ROLE=IMAGE with ROLE one of {', '.join(ROLES)}")
    last = image.rsplit("/", 1)[-1]
    if not _IMAGE.fullmatch(image) or (":" not in last and "@" not in last) or last.endswith(":latest"):
        raise OptionError(f"--image {text!r}: the image needs a pinned tag or digest (not latest)")
    return role, image


def parse_resource(text: str) -> tuple[str, str, str, str]:
    """`ROLE.requests|limits.cpu|memory=QUANTITY`."""
    match = _RESOURCE.fullmatch(text)
    if match is None or match["role"] not in ROLES:
        raise OptionError(
            f"--resource {text!r}: write ROLE.requests.cpu=QUANTITY (or limits, memory), ROLE one of "
            f"{', '.join(ROLES)}"
        )
    if not _QUANTITY.fullmatch(match["value"]):
        raise OptionError(f"--resource {text!r}: {match['value']!r} is not a Kubernetes quantity")
    return match["role"], match["kind"], match["name"], match["value"]


def parse_bundle(url: str) -> BundleSource:
    """An https URL of a bundle: OPA downloads it over TLS, so no one on the way swaps the policy."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or not parts.path.strip("/"):
        raise OptionError(f"--bundle-url {url!r}: write https://HOST/PATH/TO/BUNDLE.tar.gz")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise OptionError(f"--bundle-url {url!r}: no query, fragment or credentials in the URL")
    return BundleSource(f"https://{parts.netloc}", parts.path.lstrip("/"))


def parse_policy_configmap(name: str) -> str:
    if not _DNS_LABEL.fullmatch(name) and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise OptionError(f"--policy-configmap {name!r} is not a ConfigMap name")
    return name


def parse_listen_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise OptionError(f"--listen-port {text!r} is not a port number")
    return int(text)
