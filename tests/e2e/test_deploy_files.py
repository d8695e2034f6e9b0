"""The deployment files, checked without Docker or a cluster: the Envoy configurations
validate and are current, docker compose and the Kubernetes manifests refer to files
that exist, pass flags the sidecar accepts, and agree on every address."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.render import (
    DEPLOY_DIR,
    ENVOY_HTTP_TEMPLATE,
    ENVOY_HTTP_VARIANTS,
    ENVOY_VARIANTS,
    HTTP_MODE_ADDRESSES,
    KUBERNETES_CONFIGMAPS,
    KUBERNETES_ENVOY_VARIANT,
    REPO_ROOT,
    EnvoyAddresses,
    RenderError,
    fill,
    generated_files,
    main,
    render_envoy,
)
from sidecar.inject.containers import SOCKET_ADDR
from tests.e2e.deploy_files import EnvoyConfig, host_port, sidecar_settings, validate_envoy_config

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_ENVOY_CONFIG = DEPLOY_DIR / "envoy" / "envoy-grpc-unix.yaml"
KUBERNETES_DIR = DEPLOY_DIR / "kubernetes"
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # oldest and newest checked


# --- Envoy ---------------------------------------------------------------------


def test_generated_files_are_current() -> None:
    stale = [
        str(path.relative_to(REPO_ROOT))
        for path, text in generated_files().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `python -m deploy.render` to regenerate {stale}"


@pytest.mark.parametrize("name", sorted({**ENVOY_VARIANTS, **ENVOY_HTTP_VARIANTS}))
def test_committed_envoy_configs_validate(name: str) -> None:
    validate_envoy_config(DEPLOY_DIR / name)


def test_envoy_config_keeps_its_fail_closed_settings() -> None:
    config = EnvoyConfig.load(render_envoy())
    ext_authz = config.ext_authz
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["transport_api_version"] == "V3"
    assert ext_authz["status_on_error"] == {"code": 503}
    assert ext_authz["validate_mutations"] is True
    assert ext_authz["deny_at_disable"]["default_value"] is True
    assert ext_authz["include_peer_certificate"] is True
    body = ext_authz["with_request_body"]
    assert body["allow_partial_message"] is True and body["max_request_bytes"] == 8192
    # Envoy waits longer than the sidecar's own budget, so the sidecar's deny is what arrives.
    timeout = float(ext_authz["grpc_service"]["timeout"].removesuffix("s"))
    default_budget = sidecar_settings(["--opa-url", "http://127.0.0.1:8181"]).opa_timeout
    assert timeout >= default_budget + 0.1
    # No route may switch the filter off.
    assert "typed_per_filter_config" not in yaml.safe_dump(config.raw)
    assert config.admin_address.startswith("127.0.0.1:")


def test_variants_differ_only_in_the_sidecar_address() -> None:
    tcp, unix = (EnvoyConfig.load(render_envoy(ENVOY_VARIANTS[name])) for name in sorted(ENVOY_VARIANTS))
    assert tcp.sidecar_address == "127.0.0.1:9191"
    assert unix.sidecar_address == "unix:///run/opa-sidecar/authz.sock"
    unix.raw["static_resources"]["clusters"][0]["load_assignment"] = tcp.raw["static_resources"]["clusters"][
        0
    ]["load_assignment"]
    assert unix.raw == tcp.raw


# --- Envoy in ext_authz HTTP mode ----------------------------------------------


def _http_sidecar_address(config: EnvoyConfig) -> str:
    return config.cluster_address(config.ext_authz["http_service"]["server_uri"]["cluster"])


def test_http_mode_envoy_config_keeps_its_fail_closed_settings() -> None:
    from sidecar.http_authz import DECISION_HEADER, PREFIX

    config = EnvoyConfig.load(render_envoy(HTTP_MODE_ADDRESSES, ENVOY_HTTP_TEMPLATE))
    ext_authz = config.ext_authz
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["transport_api_version"] == "V3"
    assert ext_authz["status_on_error"] == {"code": 503}
    assert ext_authz["validate_mutations"] is True
    assert ext_authz["deny_at_disable"]["default_value"] is True
    body = ext_authz["with_request_body"]
    assert body["allow_partial_message"] is True and body["max_request_bytes"] == 8192
    service = ext_authz["http_service"]
    assert service["path_prefix"] == PREFIX
    default = sidecar_settings(["--opa-url", "http://127.0.0.1:8181"])
    assert _http_sidecar_address(config) == str(default.http_addr)
    timeout = float(service["server_uri"]["timeout"].removesuffix("s"))
    assert timeout >= default.opa_timeout + 0.1
    # Only listed headers reach the upstream, and no client copy of them gets past a
    # header_mutation placed before ext_authz.
    response = service["authorization_response"]
    upstream = [pattern["exact"] for pattern in response["allowed_upstream_headers"]["patterns"]]
    assert set(upstream) == {"x-authz-policy", "x-auth-subject"}
    assert "allowed_upstream_headers_to_append" not in response
    names = [f["name"] for f in config.connection_manager["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    mutations = config.connection_manager["http_filters"][0]["typed_config"]["mutations"]
    assert [m["remove"] for m in mutations["request_mutations"]] == upstream
    client = {pattern["exact"] for pattern in response["allowed_client_headers"]["patterns"]}
    assert DECISION_HEADER in client
    assert "typed_per_filter_config" not in yaml.safe_dump(config.raw)
    assert config.admin_address.startswith("127.0.0.1:")


def test_http_mode_differs_from_grpc_mode_only_in_how_envoy_asks_the_sidecar() -> None:
    grpc = EnvoyConfig.load(render_envoy()).raw
    http = EnvoyConfig.load(render_envoy(HTTP_MODE_ADDRESSES, ENVOY_HTTP_TEMPLATE)).raw
    for raw in (grpc, http):
        hcm = raw["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        # HTTP mode's check is HTTP/1.1 text, so its listener takes HTTP/1.1 only.
        assert hcm.pop("codec_type", None) == ("HTTP1" if raw is http else None)
        # The same router in both.
        kept = ("envoy.filters.http.router",)
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] in kept]
        log_format = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
        for field in ("authz_decision_id", "authz_deny_reason"):
            log_format.pop(field, None)
        raw["static_resources"]["clusters"] = [
            c for c in raw["static_resources"]["clusters"] if c["name"] == "app"
        ]
    assert http == grpc


def test_http_mode_variants_differ_only_in_the_sidecar_address() -> None:
    tcp, unix = (EnvoyConfig.load((DEPLOY_DIR / name).read_text()) for name in sorted(ENVOY_HTTP_VARIANTS))
    assert _http_sidecar_address(tcp) == "127.0.0.1:9192"
    assert _http_sidecar_address(unix) == "unix:///run/opa-sidecar/http.sock"
    # The sidecar takes the unix address as its --http-addr.
    unix_flags = ["--opa-url", "http://127.0.0.1:8181", "--http-addr", _http_sidecar_address(unix)]
    assert str(sidecar_settings(unix_flags).http_addr) == _http_sidecar_address(unix)
    [unix_cluster] = [c for c in unix.raw["static_resources"]["clusters"] if c["name"] == "opa_sidecar_http"]
    [tcp_cluster] = [c for c in tcp.raw["static_resources"]["clusters"] if c["name"] == "opa_sidecar_http"]
    unix_cluster["load_assignment"] = tcp_cluster["load_assignment"]
    assert unix.raw == tcp.raw


def test_render_prints_either_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy", "--mode", "http", "--sidecar", "unix:///run/authz-http.sock"]) == 0
    http = EnvoyConfig.load(capsys.readouterr().out)
    assert _http_sidecar_address(http) == "unix:///run/authz-http.sock"
    assert http.listen_address == EnvoyAddresses().listen
    assert main(["envoy"]) == 0
    assert EnvoyConfig.load(capsys.readouterr().out).sidecar_address == EnvoyAddresses().sidecar


@pytest.mark.parametrize(
    ("addresses", "complaint"),
    [
        (EnvoyAddresses(sidecar="opa-sidecar:9191"), "sidecar"),
        (EnvoyAddresses(upstream="unix:///app.sock"), "upstream"),
        (EnvoyAddresses(listen="0.0.0.0:http"), "listen"),
        (EnvoyAddresses(admin="0.0.0.0:9901"), "admin"),
    ],
)
def test_render_refuses_addresses_envoy_could_not_use(addresses: EnvoyAddresses, complaint: str) -> None:
    with pytest.raises(RenderError, match=complaint):
        render_envoy(addresses)


def test_fill_refuses_missing_and_unknown_placeholders() -> None:
    assert fill("a: ${A}", {"A": "1"}) == "a: 1"
    with pytest.raises(RenderError, match="no value for B"):
        fill("a: ${A} ${B}", {"A": "1"})
    with pytest.raises(RenderError, match="no placeholder C"):
        fill("a: ${A}", {"A": "1", "C": "2"})


# --- docker compose ------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    assert set(parsed["services"]) == {"envoy", "opa", "opa-sidecar", "app"}
    return parsed


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):  # else a named volume
            mounts[target] = (REPO_ROOT / source).resolve()
    return mounts


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """volume name -> container path and options, for named volumes."""
    named = {}
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if not source.startswith((".", "/")):
            named[source] = rest
    return named


def test_compose_mounts_and_builds_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for host_path in _mounts(service).values():
            assert host_path.exists(), f"{name} mounts {host_path}, which does not exist"
            assert REPO_ROOT in host_path.parents
        if "build" in service:
            assert (REPO_ROOT / service["build"] / "Dockerfile").is_file()
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?(-\w+)?", image), f"{name}: pin {image!r}"


def test_compose_runs_the_envoy_config_of_deploy_envoy(compose: dict[str, Any]) -> None:
    envoy = compose["services"]["envoy"]
    command = envoy["command"]
    config_path = command[command.index("--config-path") + 1]
    mounted = _mounts(envoy)[config_path]
    assert mounted == COMPOSE_ENVOY_CONFIG
    validate_envoy_config(mounted)


def test_compose_can_switch_envoy_to_http_mode(compose: dict[str, Any]) -> None:
    """docker-compose.yml names the HTTP-mode config in a comment; swapping the mount needs
    nothing else, as the sidecar's default --http-addr is where that config looks."""
    alternative = "./deploy/envoy/envoy-http-tcp.yaml:/etc/envoy/envoy.yaml:ro"
    assert f"# - {alternative}" in COMPOSE_FILE.read_text()
    http = EnvoyConfig.load((REPO_ROOT / alternative.split(":")[0]).read_text())
    sidecar = sidecar_settings(compose["services"]["opa-sidecar"]["command"])
    assert _http_sidecar_address(http) == str(sidecar.http_addr)


def test_compose_publishes_one_port_envoys_listener(compose: dict[str, Any]) -> None:
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    envoy = EnvoyConfig.load(COMPOSE_ENVOY_CONFIG.read_text())
    assert published == [f"10000:{envoy.listen_address.rpartition(':')[2]}"]
    for name in ("opa", "opa-sidecar", "app"):
        # Loopback addresses below are shared with Envoy only through its network namespace.
        assert compose["services"][name]["network_mode"] == "service:envoy"


def test_compose_sidecar_socket_is_shared_by_envoy_and_the_sidecar_alone(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sidecar = sidecar_settings(services["opa-sidecar"]["command"])
    assert sidecar.grpc_addr.unix_path is not None
    socket_dir = str(Path(sidecar.grpc_addr.unix_path).parent)
    mounting = {name: _named_volumes(service) for name, service in services.items()}
    assert {name for name, named in mounting.items() if "authz-socket" in named} == {"envoy", "opa-sidecar"}
    assert mounting["opa-sidecar"]["authz-socket"] == socket_dir
    assert mounting["envoy"]["authz-socket"] == f"{socket_dir}:ro"  # a socket connects read-only
    assert sidecar.unix_socket_mode & 0o007 == 0  # nobody outside the owner and group
    options = dict(
        option.split("=", 1) for option in compose["volumes"]["authz-socket"]["driver_opts"]["o"].split(",")
    )
    sidecar_user, _, sidecar_group = _dockerfile_user().partition(":")
    assert options == {"uid": sidecar_user, "gid": sidecar_group, "mode": "0770"}
    # Envoy is in the socket's group, not its owner.
    assert services["envoy"]["group_add"] == [sidecar_group]
    assert services["envoy"]["user"].partition(":")[0] != sidecar_user


def _dockerfile_user() -> str:
    [user] = re.findall(r"^USER (\S+)$", (REPO_ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return str(user)


def test_compose_addresses_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    envoy = EnvoyConfig.load(COMPOSE_ENVOY_CONFIG.read_text())
    sidecar = sidecar_settings(services["opa-sidecar"]["command"])
    assert str(sidecar.grpc_addr) == envoy.sidecar_address
    opa_command = services["opa"]["command"]
    assert opa_command[:2] == ["run", "--server"]
    assert f"--addr={host_port(str(sidecar.opa_url))}" in opa_command
    app_command = services["app"]["command"]
    assert app_command[app_command.index("--addr") + 1] == envoy.upstream_address
    assert app_command[-3].endswith("echo_upstream.py")


def test_compose_opa_loads_the_repositorys_policies_with_console_decision_logs(
    compose: dict[str, Any],
) -> None:
    opa = compose["services"]["opa"]
    assert re.fullmatch(r"openpolicyagent/opa:1\.\d+\.\d+", opa["image"])
    assert "--set=decision_logs.console=true" in opa["command"]
    policy_dir = opa["command"][-1]
    assert _mounts(opa)[policy_dir] == REPO_ROOT / "rego"


def test_sidecar_settings_reject_unknown_flags() -> None:
    """The check above can fail: a flag `serve` does not have is refused."""
    with pytest.raises(AssertionError, match="rejects"):
        sidecar_settings(["--opa-url", "http://127.0.0.1:8181", "--no-such-flag"])


# --- Dockerfile ----------------------------------------------------------------


def _dockerfile_stages() -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by stage."""
    text = re.sub(r"\\\n\s*", " ", (REPO_ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_runtime_stage_is_small_and_unprivileged() -> None:
    build, runtime = _dockerfile_stages()
    assert runtime[0] == "FROM python:3.11-slim"
    [user] = [line for line in runtime if line.startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert runtime[-1] == 'ENTRYPOINT ["opa-sidecar", "serve"]'
    runtime_text = "\n".join(runtime)
    assert not re.search(r"apt-get|gcc|build-essential|COPY (?!--from)", runtime_text)
    assert "--no-index" in runtime_text  # only the wheels made in the build stage
    assert any(line.startswith("RUN pip wheel") for line in build)


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sidecar's wheel built from exactly the files the build stage copies, as the image does."""
    build, _ = _dockerfile_stages()
    sources = [word for line in build if line.startswith("COPY ") for word in line.split()[1:-1]]
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "*" in ignored and all(f"!{source}" in ignored or f"!{source}/" in ignored for source in sources)
    context = tmp_path_factory.mktemp("image") / "src"
    context.mkdir()
    for source in sources:
        origin = REPO_ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, context / source)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "-q",
        "-w",
        "out",
        ".",
    ]
    if _has_setuptools():
        command.insert(-1, "--no-build-isolation")  # faster, and needs no index
    subprocess.run(command, cwd=context, check=True, capture_output=True, timeout=300)
    [wheel] = (context / "out").glob("opa_sidecar-*.whl")
    return wheel


def test_dockerfile_build_stage_has_what_the_wheel_needs(image_wheel: Path) -> None:
    with zipfile.ZipFile(image_wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n) for n in names if n.endswith("entry_points.txt"))
    assert any(name.startswith("sidecar/_proto/envoy/service/auth/v3/") for name in names)
    assert {"sidecar/envoy/templates/envoy.yaml", "sidecar/envoy/templates/envoy-http.yaml"} <= set(names)
    assert b"opa-sidecar = sidecar.cli:main" in entry_points


INJECT_SAMPLE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: ghcr.io/example/web:1.0
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_installed_wheel_injects_envoy_mode_outside_the_repository(image_wheel: Path, tmp_path: Path) -> None:
    """`opa-sidecar inject --mode envoy` as `pip install` or the image has it: the wheel in a
    fresh virtual environment, run from a directory outside the repository, writes what the
    checkout writes."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # The dependencies come from this environment's site-packages, with no index: a path in
    # a .pth file adds that directory alone, not the checkout its editable install points to.
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            image_wheel,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "app.yaml").write_text(INJECT_SAMPLE)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"}}
    where = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util, sidecar; print(sidecar.__file__, importlib.util.find_spec('deploy'))",
        ],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == "None", "the test must not reach the checkout"

    installed = subprocess.run(
        [venv / "bin" / "opa-sidecar", "inject", "--mode", "envoy", "app.yaml"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (installed.returncode, installed.stderr) == (0, "")
    checkout = subprocess.run(
        [sys.executable, "-m", "sidecar", "inject", "--mode", "envoy", elsewhere / "app.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert installed.stdout == checkout.stdout
    [configmap] = [d for d in yaml.safe_load_all(installed.stdout) if d["kind"] == "ConfigMap"]
    assert configmap["data"]["envoy.yaml"] == render_envoy(
        EnvoyAddresses(listen="0.0.0.0:10000", upstream="127.0.0.1:8080", sidecar=SOCKET_ADDR)
    )


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


# --- Kubernetes ----------------------------------------------------------------


def _kubernetes_documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((KUBERNETES_DIR / "kustomization.yaml").read_text())
    files = sorted(p.name for p in KUBERNETES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files, "kustomization.yaml must list every manifest"
    return [
        (name, document)
        for name in files
        for document in yaml.safe_load_all((KUBERNETES_DIR / name).read_text())
        if document
    ]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """kind/name -> document."""
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for _, doc in _kubernetes_documents()}


@pytest.fixture(scope="module")
def pod(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["Deployment/opa-sidecar-demo"]["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    [container] = [c for c in pod["containers"] if c["name"] == name]
    return dict(container)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    for name, document in _kubernetes_documents():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{name} {document['kind']}: {exc.message} at {list(exc.path)} (Kubernetes {version})"
            )


def test_schema_validation_catches_a_misspelt_field(pod: dict[str, Any]) -> None:
    import copy

    import kubernetes_validate

    broken = copy.deepcopy(pod)
    context = broken["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    document = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": broken}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def test_pod_has_the_four_containers_locked_down(pod: dict[str, Any]) -> None:
    assert [c["name"] for c in pod["containers"]] == ["app", "envoy", "opa-sidecar", "opa"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context["runAsUser"] > 0, container["name"]
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) == {"cpu", "memory"}, container["name"]
        assert "readinessProbe" in container, container["name"]
        if container["name"] != "app":
            assert "livenessProbe" in container, container["name"]


def test_pod_volumes_come_from_the_configmaps(
    pod: dict[str, Any], manifests: dict[str, dict[str, Any]]
) -> None:
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert f"ConfigMap/{volume['configMap']['name']}" in manifests
    [policy_volume] = [v["configMap"] for v in pod["volumes"] if v["name"] == "opa-policy"]
    policy = manifests["ConfigMap/opa-policy"]["data"]
    # Every policy file is mounted, at its path under rego/.
    assert {item["key"]: item["path"] for item in policy_volume["items"]} == {
        key: key.replace("__", "/") for key in policy
    }
    assert any(path.endswith(".rego") for path in policy)
    assert "envoy.yaml" in manifests["ConfigMap/envoy-config"]["data"]


def test_pod_sidecar_socket_is_shared_by_envoy_and_the_sidecar_alone(pod: dict[str, Any]) -> None:
    sidecar = sidecar_settings(_container(pod, "opa-sidecar")["args"])
    assert sidecar.grpc_addr.unix_path is not None
    assert sidecar.unix_socket_mode & 0o007 == 0  # nobody outside the owner and group
    [volume] = [v for v in pod["volumes"] if v["name"] == "authz-socket"]
    assert set(volume) == {"name", "emptyDir"}  # the pod's own, gone with it
    mounts = {
        container["name"]: mount
        for container in pod["containers"]
        for mount in container.get("volumeMounts", [])
        if mount["name"] == "authz-socket"
    }
    assert set(mounts) == {"envoy", "opa-sidecar"}  # never the app, nor OPA
    socket_dir = str(Path(sidecar.grpc_addr.unix_path).parent)
    assert {name: mount["mountPath"] for name, mount in mounts.items()} == dict.fromkeys(mounts, socket_dir)
    assert mounts["envoy"].get("readOnly") is True and not mounts["opa-sidecar"].get("readOnly")
    # fsGroup owns the volume, and so the socket the sidecar creates in it; Envoy
    # reaches it as a member of that group, not as the socket's owner.
    group = pod["securityContext"]["fsGroup"]
    envoy, sidecar_context = (_container(pod, name)["securityContext"] for name in ("envoy", "opa-sidecar"))
    assert isinstance(group, int) and group > 0
    assert envoy["runAsUser"] != sidecar_context["runAsUser"]


def test_configmap_envoy_config_validates(manifests: dict[str, dict[str, Any]]) -> None:
    text = manifests["ConfigMap/envoy-config"]["data"]["envoy.yaml"]
    assert text == (DEPLOY_DIR / KUBERNETES_ENVOY_VARIANT).read_text()
    assert KUBERNETES_CONFIGMAPS in {str(p.relative_to(DEPLOY_DIR)) for p in generated_files()}


def test_pod_addresses_agree(pod: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> None:
    envoy_config = EnvoyConfig.load(manifests["ConfigMap/envoy-config"]["data"]["envoy.yaml"])
    listen_port = int(envoy_config.listen_address.rpartition(":")[2])

    envoy = _container(pod, "envoy")
    command = envoy["command"] + envoy["args"]
    [mount] = [m for m in envoy["volumeMounts"] if m["name"] == "envoy-config"]
    assert command[command.index("--config-path") + 1] == f"{mount['mountPath']}/envoy.yaml"
    assert envoy["ports"] == [{"name": "http", "containerPort": listen_port}]

    service = manifests["Service/opa-sidecar-demo"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    assert manifests["NetworkPolicy/opa-sidecar-demo"]["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": listen_port}]}
    ]

    sidecar = sidecar_settings(_container(pod, "opa-sidecar")["args"])
    assert str(sidecar.grpc_addr) == envoy_config.sidecar_address
    assert sidecar.grpc_addr.unix_path is not None  # Check is for Envoy alone: see below
    assert sidecar.http_addr.host == "127.0.0.1"  # HTTP checks are for the pod alone
    ports = {p["name"]: p["containerPort"] for p in _container(pod, "opa-sidecar")["ports"]}
    assert ports == {"sidecar-probe": sidecar.probe_addr.port}  # probes and metrics only

    opa = _container(pod, "opa")
    assert f"--addr={host_port(str(sidecar.opa_url))}" in opa["args"]
    [policy_mount] = [m for m in opa["volumeMounts"] if m["name"] == "opa-policy"]
    assert opa["args"][-1] == policy_mount["mountPath"]

    app = _container(pod, "app")["command"]
    assert app[app.index("--addr") + 1] == envoy_config.upstream_address
