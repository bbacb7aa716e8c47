"""The active policy bundle, and reloading it safely while the gateway runs.

`BundleHolder.current` is read once at the start of each decision, so a
decision never mixes two bundles. `reload` validates the new bundle fully
before swapping the reference (an atomic assignment); a bundle that fails to
load leaves the last good one serving and is reported: a log line, the
failure counter, and the status RPC's last error. Reloads are triggered by
SIGHUP (see `tollgate serve`) and by `watch`, which polls the bundle's files.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import PolicyError
from gateway.policy import Bundle, load_bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleStatus:
    hash: str
    source: str
    runtime: str
    loaded_at: datetime
    reloads: int
    failures: int
    last_error: str
    last_error_at: datetime | None


class BundleHolder:
    """Holds the serving bundle; thread-safe."""

    def __init__(self, folder: Path, runtime: str = "interpreted") -> None:
        self.folder = folder
        self.runtime = runtime
        self._lock = threading.Lock()
        self._bundle = load_bundle(folder, runtime)
        self._loaded_at = datetime.now(UTC)
        self._reloads = self._failures = 0
        self._last_error = ""
        self._last_error_at: datetime | None = None
        self._seen = self._fingerprint()

    @classmethod
    def fixed(cls, bundle: Bundle) -> BundleHolder:
        """A holder for an already loaded bundle (tests, the demo)."""
        holder = cls.__new__(cls)
        holder.folder = Path(bundle.source)
        holder.runtime = bundle.runtime
        holder._lock = threading.Lock()
        holder._bundle = bundle
        holder._loaded_at = datetime.now(UTC)
        holder._reloads = holder._failures = 0
        holder._last_error, holder._last_error_at = "", None
        holder._seen = holder._fingerprint()
        return holder

    @property
    def current(self) -> Bundle:
        return self._bundle

    def reload(self) -> bool:
        """Load the folder again; swap in the new bundle only if it is valid."""
        with self._lock:
            self._seen = self._fingerprint()
            try:
                bundle = load_bundle(self.folder, self.runtime)
            except PolicyError as exc:
                self._failures += 1
                self._last_error, self._last_error_at = str(exc), datetime.now(UTC)
                log.error("policy bundle NOT reloaded, still serving %s: %s",
                          self._bundle.hash[:12], exc)  # fmt: skip
                return False
            self._last_error, self._last_error_at = "", None
            if bundle.hash != self._bundle.hash:
                log.warning("policy bundle reloaded: %s -> %s",
                            self._bundle.hash[:12], bundle.hash[:12])  # fmt: skip
                self._bundle, self._loaded_at = bundle, datetime.now(UTC)
                self._reloads += 1
            return True

    def status(self) -> BundleStatus:
        return BundleStatus(
            hash=self._bundle.hash,
            source=str(self.folder),
            runtime=self._bundle.runtime,
            loaded_at=self._loaded_at,
            reloads=self._reloads,
            failures=self._failures,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    def watch(
        self, stop: threading.Event, wake: threading.Event, interval: float
    ) -> None:
        """Reload when `wake` is set (SIGHUP), or when the files changed and
        then stayed unchanged for a whole interval (so a file caught half
        written is never loaded), until `stop` is set."""
        pending: tuple[tuple[str, int, int], ...] | None = None
        while not stop.is_set():
            woken = wake.wait(interval)
            wake.clear()
            if stop.is_set():
                return
            if woken:
                self.reload()
                pending = None
                continue
            now = self._fingerprint()
            if now == self._seen:
                pending = None
            elif now == pending:  # changed, then settled for one interval
                self.reload()
                pending = None
            else:
                pending = now

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        files = sorted(self.folder.rglob("*.y*ml"))
        out = []
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            out.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(out)
