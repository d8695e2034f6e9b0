"""What ships for deployment carries no credential the repository also ships.

The shipped artifacts are everything under deploy/, docker-compose.yml, the Dockerfile,
and every file docker compose mounts into a container (less what OPA is told to ignore).
Every other file of the repository (tests, demo data, Rego tests, scripts, docs) is
searched for credentials: JSON Web Tokens, key material of JSON Web Keys, PEM blocks,
bearer tokens, and values given to names such as api_key, token, secret or password.
None of them may appear in a shipped artifact, and a shipped artifact holds no private
key, JSON Web Token or secret-looking assignment of its own either.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml

from deploy.render import DEPLOY_DIR, REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SKIPPED_DIRS = {"__pycache__", "node_modules"}
MAX_FILE_BYTES = 2 << 20

JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
# Key material of a JWK: RSA modulus and private parts, EC coordinates, symmetric keys.
JWK_MEMBER = re.compile(r'"(?:n|d|p|q|dp|dq|qi|x|y|k)"\s*:\s*"([A-Za-z0-9_-]{16,})"')
# Only the private and symmetric parts: a shipped key set may hold your own public keys.
JWK_SECRET_MEMBER = re.compile(r'"(?:d|p|q|dp|dq|qi|k)"\s*:\s*"([A-Za-z0-9_-]{16,})"')
BEARER = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{8,})")
SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)
    ["']?[\w.-]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential|private[_-]?key)[\w.-]*["']?
    \s*(?::=|:|=)\s*
    ["']([^"'\s]{6,})["']
    """
)


def _text_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
            yield path


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def compose_mounted_files() -> set[Path]:
    """Files of the repository that docker compose puts into a container, less those the
    container's OPA is told to skip (`--ignore=PATTERN`)."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    mounted: set[Path] = set()
    for service in compose["services"].values():
        command = service.get("command") or []
        ignored = [arg.removeprefix("--ignore=") for arg in command if arg.startswith("--ignore=")]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                continue  # a named volume holds nothing of the repository
            for path in _text_files((REPO_ROOT / source).resolve()):
                if not any(fnmatch.fnmatch(path.name, pattern) for pattern in ignored):
                    mounted.add(path)
    return mounted


def shipped_files() -> set[Path]:
    files = set(_text_files(DEPLOY_DIR)) | {COMPOSE_FILE, REPO_ROOT / "Dockerfile"}
    return files | compose_mounted_files()


def _looks_secret(value: str) -> bool:
    """A value given to a credential's name, told apart from words, paths and parameters."""
    if (
        len(value) < 8
        or "/" in value
        or "=" in value.rstrip("=")
        or value.rstrip("=").replace("_", "").isalpha()
    ):
        return False
    return not value.endswith(".")  # the fixed start of a JWT, not one


def _assigned_secrets(text: str) -> set[str]:
    return {
        value
        for pattern in (BEARER, SECRET_ASSIGNMENT)
        for value in pattern.findall(text)
        if _looks_secret(value)
    }


def credentials_in(text: str) -> set[str]:
    """Every credential-looking value in `text`, public keys and certificates included."""
    found = set(JWT.findall(text)) | set(JWK_MEMBER.findall(text)) | _assigned_secrets(text)
    return found | {re.sub(r"\s", "", body) for _, body in PEM.findall(text) if body.strip()}


def secrets_in(text: str) -> set[str]:
    """What no shipped file may hold, wherever else it comes from: tokens, private and
    symmetric JWK parts, values given to a credential's name."""
    return set(JWT.findall(text)) | set(JWK_SECRET_MEMBER.findall(text)) | _assigned_secrets(text)


def private_keys_in(text: str) -> list[str]:
    return [label for label, _ in PEM.findall(text) if "PRIVATE KEY" in label]


def repository_credentials(shipped: Iterable[Path]) -> dict[str, Path]:
    """Credential -> a file outside the shipped set that holds it."""
    skip = set(shipped) | {Path(__file__).resolve()}
    found: dict[str, Path] = {}
    for path in _text_files(REPO_ROOT):
        if path.resolve() in skip or (text := _read(path)) is None:
            continue
        for credential in credentials_in(text):
            found.setdefault(credential, path)
    return found


def leaks(shipped: Iterable[Path], known: dict[str, Path]) -> list[str]:
    """One line per credential found in a shipped file."""
    problems: list[str] = []
    for path in sorted(shipped):
        text = _read(path)
        if text is None:
            continue
        where = _shown(path)
        problems += [f"{where}: a {label} block" for label in private_keys_in(text)]
        problems += [f"{where}: {value[:24]}... of its own" for value in sorted(secrets_in(text))]
        problems += [
            f"{where}: {value[:24]}... also in {_shown(known[value])}"
            for value in sorted(known)
            if value in text
        ]
    return problems


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


@pytest.fixture(scope="module")
def shipped() -> set[Path]:
    return shipped_files()


@pytest.fixture(scope="module")
def known(shipped: set[Path]) -> dict[str, Path]:
    return repository_credentials(shipped)


def test_shipped_artifacts_hold_no_credential(shipped: set[Path], known: dict[str, Path]) -> None:
    assert not leaks(shipped, known)


def test_the_shipped_set_covers_every_deployment(shipped: set[Path]) -> None:
    names = {path.relative_to(REPO_ROOT).as_posix() for path in shipped}
    assert {"docker-compose.yml", "Dockerfile", "deploy/kubernetes/configmaps.yaml"} <= names
    assert "rego/envoy/authz.rego" in names  # mounted into OPA by docker compose
    assert "rego/envoy/data.json" in names
    assert not any(name.endswith("_test.rego") for name in names)  # OPA is told to skip them


def test_the_repository_ships_credentials_the_scan_knows(known: dict[str, Path]) -> None:
    """The search finds what the repository holds (else the test above proves nothing)."""
    sources = {path.relative_to(REPO_ROOT).as_posix() for path in known.values()}
    assert "rego/lib/fixtures_test.rego" in sources  # test tokens and keys
    assert any(JWT.fullmatch(value) for value in known)
    assert any(JWK_MEMBER.search(f'"n": "{value}"') and len(value) > 300 for value in known)  # an RSA modulus


@pytest.mark.parametrize(
    "planted",
    [
        '{"demo": {"api_key": "%s"}}',
        "    - --set=services.authz.credentials.bearer.token=%s",
        '  keys.json: |\n    {"keys": [{"kty": "RSA", "n": "%s"}]}',
    ],
)
def test_a_repository_credential_planted_in_a_deploy_file_is_found(
    shipped: set[Path], known: dict[str, Path], tmp_path: Path, planted: str
) -> None:
    credential = max(known, key=len)  # e.g. a test token or an RSA modulus
    configmap = tmp_path / "configmaps.yaml"
    configmap.write_text((DEPLOY_DIR / "kubernetes" / "configmaps.yaml").read_text() + planted % credential)
    found = leaks([configmap], known)
    assert any(credential[:24] in line and "also in" in line for line in found)


def test_private_keys_and_demo_keys_of_their_own_are_found(tmp_path: Path) -> None:
    artifact = tmp_path / "deployment.yaml"
    artifact.write_text(
        "config: {api_key: 'not-in-the-repository-1'}\n"
        "key.pem: |\n  -----BEGIN EC PRIVATE KEY-----\n  MHcCAQEEIK\n  -----END EC PRIVATE KEY-----\n"
        'jwks.json: {"keys": [{"kty": "oct", "k": "c3ltbWV0cmljLWtleS1ieXRlcw"}]}\n'
    )
    found = leaks([artifact], {})
    assert any("EC PRIVATE KEY block" in line for line in found)
    assert any("not-in-the-repository-1" in line for line in found)
    assert any("c3ltbWV0cmljLWtleS1ieXRl" in line for line in found)


def test_your_own_public_keys_may_ship(tmp_path: Path) -> None:
    """A public key set of your identity provider is configuration, not a secret."""
    artifact = tmp_path / "data.json"
    artifact.write_text('{"keys": [{"kty": "RSA", "alg": "RS256", "e": "AQAB", "n": "%s"}]}' % ("q" * 342))
    assert leaks([artifact], {}) == []
