"""TLS material that is re-read when its files change, without a restart.

Certificates issued by cert-manager or SPIFFE rotate every few hours. One
daemon thread looks at every watched set of files once a second (a stat of
each file, nothing more while they are unchanged), so neither a check nor the
event loop ever waits on the file system. When a stamp changes, the whole set
is loaded again in that thread; the checks pick up the new material with their
next connection.

A set that fails to load (a half-written file, a key that does not match its
certificate, a missing file) leaves the material in use as it was: dropping it
would stop every TLS connection, while the old material is still what the
operator last got right. The failure is logged once per change of the files,
naming the file, and reported (``opa_sidecar_tls_files_rejected``), and the set
is loaded again at its next change.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
RECHECK_SECONDS = 1.0

T = TypeVar("T")
# What identifies a version of a file: modification and change times, size, inode.
Stamp = tuple[int, int, int, int] | None
# Told the material's name and whether a change of its files loaded.
ReloadReport = Callable[[str, bool], None]


class MaterialError(ValueError):
    """A file of a set is unusable; the message names the flag and the file,
    never the file's content."""


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes secret swaps the link's target
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class WatchedMaterial(Generic[T]):
    """The latest material ``load`` made from ``paths``; loaded at once (a
    MaterialError then stops the start), then again whenever a file changes."""

    def __init__(
        self, name: str, paths: Sequence[str], load: Callable[[], T], report: ReloadReport | None = None
    ) -> None:
        self.name = name
        self._paths = tuple(paths)
        self._load = load
        self._report = report
        # Stamps before reading: a write during the load shows as a change next time.
        self._stamps = self._stamp_all()
        self._current = load()
        _poller.watch(self)

    def current(self) -> T:
        return self._current

    def _stamp_all(self) -> tuple[Stamp, ...]:
        return tuple(_stamp(path) for path in self._paths)

    def poll(self) -> None:
        """In the poller thread: load again if a file changed since last time."""
        stamps = self._stamp_all()
        if stamps == self._stamps:
            return
        self._stamps = stamps
        try:
            material = self._load()
        except MaterialError as exc:
            log.warning("%s; %s keeps its TLS material until the file is fixed", exc, self.name)
            if self._report is not None:
                self._report(self.name, False)
            return
        self._current = material
        log.info("%s: TLS files changed; new connections use the new material", self.name)
        if self._report is not None:
            self._report(self.name, True)


class _Poller:
    """One thread for every watched set; it holds them weakly and ends when none is left."""

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[WatchedMaterial[object]] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, material: WatchedMaterial[T]) -> None:
        with self._lock:
            self._watched.add(material)  # type: ignore[arg-type]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tls-file-poller", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(RECHECK_SECONDS)
            with self._lock:
                watched = list(self._watched)
                if not watched:
                    self._thread = None
                    return
            for material in watched:
                try:
                    material.poll()
                except Exception:  # a bug here must not stop the other sets' rotation
                    log.exception("looking at the %s's TLS files failed", material.name)
            del watched, material


_poller = _Poller()
