"""Rotating TLS files the ways real issuers do, and looking at what a server presents.

A `KeyDir` is laid out as Kubernetes mounts a secret: the flags name
`<dir>/current/<file>`, `current` is a symlink to a version directory, and a
rotation writes a new version and swaps the link with one rename, so the
certificate and its key change together. `write_in_place` and `write_half`
are the other way: a file rewritten where it is, seen half-written.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

_versions = itertools.count(1)


class KeyDir:
    def __init__(self, root: Path, files: dict[str, Path]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.rotate(files)

    def path(self, name: str) -> str:
        return str(self.root / "current" / name)

    def rotate(self, files: dict[str, Path]) -> None:
        """Every file of the set replaced at once (files: name -> source)."""
        version = self.root / f"v{next(_versions)}"
        version.mkdir()
        for name, source in files.items():
            shutil.copyfile(source, version / name)
        link = self.root / "current.new"
        link.symlink_to(version.name)
        os.replace(link, self.root / "current")


def bundle(path: Path, *cas: Path) -> Path:
    path.write_bytes(b"".join(ca.read_bytes() for ca in cas))
    return path


def write_in_place(target: str | Path, source: Path) -> None:
    Path(target).write_bytes(source.read_bytes())


def write_half(target: str | Path, source: Path) -> None:
    """The file as a reader sees it halfway through a non-atomic write."""
    data = source.read_bytes()
    Path(target).write_bytes(data[: len(data) // 2])


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def served_certificate(port: int, trusted: Path, client: tuple[Path, Path] | None = None) -> bytes:
    """The certificate a new TLS handshake with 127.0.0.1:port gets (DER); blocking."""
    context = ssl.create_default_context(cafile=str(trusted))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(*client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cert = tls.getpeercert(binary_form=True)
    assert cert is not None
    return cert


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> float:
    """Seconds until `condition` held; fails after `seconds`. The poller looks once a second."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not true within {seconds} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def metric(exposition: bytes, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(f"{name}{{{wanted}}}" if wanted else name) + r" (\S+)"
    found = re.search(pattern, exposition.decode(), re.MULTILINE)
    assert found is not None, f"no sample {name}{{{wanted}}}"
    return float(found.group(1))
