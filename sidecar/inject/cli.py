"""`opa-sidecar inject [FILE...]`: exit 0 with the manifests on stdout, 2 (nothing written)
on input it cannot transform safely or a bad option, each message naming the document."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sidecar.inject.companions import mesh_config
from sidecar.inject.options import (
    MODES,
    InjectOptions,
    OptionError,
    parse_bundle,
    parse_image,
    parse_listen_port,
    parse_policy_configmap,
    parse_resource,
)
from sidecar.inject.stream import InjectError, Source, dump, inject

EXIT_OK, EXIT_REFUSED = 0, 2


def add_inject_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "inject",
        help="add the authorizer to the pod templates of Kubernetes manifests",
        description="Read Kubernetes YAML (files, or stdin with none or -) and write it to stdout with "
        "the authorizer added to every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob "
        "(also inside Lists); other documents pass through.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="manifests to read (default: stdin)")
    parser.add_argument("--mode", choices=MODES, default="envoy", help="envoy (default) or istio")
    parser.add_argument("--port", help="envoy mode: name or number of the application port Envoy guards")
    parser.add_argument("--listen-port", default="10000", help="envoy mode: Envoy's listener (default 10000)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--policy-configmap", default="opa-policy", help="ConfigMap holding the policy (default opa-policy)"
    )
    source.add_argument("--bundle-url", help="https URL of an OPA bundle, instead of a ConfigMap")
    parser.add_argument(
        "--image", action="append", default=[], help="ROLE=IMAGE, ROLE one of envoy, opa-sidecar, opa"
    )
    parser.add_argument(
        "--resource", action="append", default=[], help="ROLE.requests.cpu=QUANTITY (or limits, memory)"
    )
    parser.add_argument(
        "--mesh-config-out",
        type=Path,
        help="istio mode (required): file for the mesh config's extension provider (istiod Helm values)",
    )


def _options(args: argparse.Namespace) -> InjectOptions:
    defaults = InjectOptions()
    images = dict(defaults.images)
    images.update(parse_image(text) for text in args.image)
    resources = {role: {k: dict(v) for k, v in kinds.items()} for role, kinds in defaults.resources.items()}
    for text in args.resource:
        role, kind, name, value = parse_resource(text)
        resources[role][kind][name] = value
    if args.mode == "istio" and args.mesh_config_out is None:
        raise OptionError(
            "--mode istio needs --mesh-config-out FILE for the mesh config's extension provider"
        )
    if args.mode != "envoy" and args.port is not None:
        raise OptionError("--port is for --mode envoy")
    return InjectOptions(
        mode=args.mode,
        app_port=args.port,
        listen_port=parse_listen_port(args.listen_port),
        images=images,
        resources=resources,
        policy_configmap=parse_policy_configmap(args.policy_configmap),
        bundle=None if args.bundle_url is None else parse_bundle(args.bundle_url),
    )


def _sources(files: list[str]) -> list[Source]:
    if not files or files == ["-"]:
        try:
            return [Source("stdin", sys.stdin.buffer.read().decode("utf-8"))]
        except UnicodeDecodeError as exc:
            raise InjectError(f"stdin: not UTF-8: {exc}") from None
    sources = []
    for name in files:
        try:
            sources.append(Source(name, Path(name).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InjectError(f"{name}: cannot read: {exc}") from None
    return sources


def run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        output = dump(inject(_sources(args.files), options))
    except (OptionError, InjectError) as exc:
        for line in str(exc).splitlines():
            print(f"opa-sidecar inject: {line}", file=sys.stderr)
        return EXIT_REFUSED
    if options.mode == "istio":
        args.mesh_config_out.write_text(
            "# Merge into your mesh config (istiod's Helm values, or IstioOperator spec.meshConfig).\n"
            "# Written by `opa-sidecar inject --mode istio`.\n" + dump([mesh_config()])
        )
    sys.stdout.write(output)
    return EXIT_OK
