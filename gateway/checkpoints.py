"""Signed checkpoints of the store's audit log, and the thread that makes them.

`CheckpointService.sign_now` signs the store's current Merkle tree head as a
C2SP checkpoint (see `audit.Checkpoint`). Invariants:

- it never signs a log whose hash chain does not verify up to the store's
  audit head;
- it never signs once the stored records no longer give the last signed root
  at its size (records rewritten) or hold fewer records than it (truncated);
- every checkpoint it signs is proven consistent with the last one stored,
  whichever key signed that one (`audit.CheckpointSigner`).

A refusal raises `audit.CheckpointError` and is logged as an error.
`PeriodicSigner` then signs nothing more until restarted: decisions go on,
signing fails closed. The checkpoints table lives in the same database as the
records, so it only detects tampering by someone who leaves it alone; publish
each checkpoint (``tollgate audit export``) where the database cannot reach.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import audit
from gateway.errors import ConfigurationError
from gateway.store import Store, StoredCheckpoint

log = logging.getLogger(__name__)

DEFAULT_ORIGIN: Final = "tollgate.local/audit"
"""The checkpoint origin line unless $TOLLGATE_AUDIT_ORIGIN names another."""

KEY_ENV: Final = "TOLLGATE_AUDIT_KEY"
"""Names the file holding the private note key that signs checkpoints."""

ORIGIN_ENV: Final = "TOLLGATE_AUDIT_ORIGIN"
"""Overrides `DEFAULT_ORIGIN`; the origin of a log can never change."""

_PROBE: Final = "tollgate key probe\n"


def load_signer_key(path: Path) -> str:
    """Read a signer key file written by ``tollgate audit keygen``.

    Raises `ConfigurationError` if the file cannot be read or holds no
    signer key (a verifier key given by mistake, for instance).
    """
    text = _read_key_file(path, "audit signing key")
    try:
        audit.sign_note(_PROBE, text)
    except audit.KeyFormatError as exc:
        raise ConfigurationError(
            f"{path}: expected the private key written by `tollgate audit keygen` "
            f"(PRIVATE+KEY+...): {exc}"
        ) from exc
    return text


def load_verifier_key(path: Path) -> str:
    """Read a verifier (public) key file; `ConfigurationError` if malformed."""
    text = _read_key_file(path, "audit verifier key")
    try:
        audit.parse_verifier(text)
    except audit.KeyFormatError as exc:
        raise ConfigurationError(
            f"{path}: expected the public key (.pub) written by "
            f"`tollgate audit keygen`: {exc}"
        ) from exc
    return text


def key_name(signer_key: str) -> str:
    """The name in a signer key text ``PRIVATE+KEY+<name>+<hash>+<key>``."""
    return signer_key.strip().split("+")[2]


def _read_key_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise ConfigurationError(f"cannot read the {what} {path}: {reason}") from exc


@dataclass(frozen=True)
class Tree:
    """A verified prefix of the log: its chain summary and its Merkle tree,
    hashed as the records streamed by (see `audit.StreamingTree`)."""

    summary: audit.ChainSummary
    hashes: audit.StreamingTree


def read_tree(
    records: Iterable[audit.AuditRecord], upto: int | None = None, old_size: int = 0
) -> Tree:
    """Verify the chain of `records` up to seq `upto`, hashing its tree on the way.

    One pass, in O(log n) memory: the tree keeps its root, the root of its
    first `old_size` records (a checkpoint's size) and, when `upto` is given
    and not below `old_size`, the consistency proof from `old_size` to `upto`.
    A record's leaf is hashed only once the chain verified up to it. Raises
    `audit.ChainBrokenError` (or another `audit.AuditError`) for the first
    record that fails.
    """
    planned = upto if upto is not None and old_size <= upto else None
    hashes = audit.StreamingTree(planned, old_size=old_size)

    def hash_leaves(
        stream: Iterable[audit.AuditRecord],
    ) -> Iterator[audit.AuditRecord]:
        for record in stream:
            if upto is not None and record.seq > upto:
                return
            yield record
            hashes.append(audit.leaf_hash(audit.record_leaf(record)))

    return Tree(audit.verify_chain(hash_leaves(records)), hashes)


def check_tree(tree: Tree, checkpoint: audit.Checkpoint) -> None:
    """Check that the signed `checkpoint` still describes the first records.

    Plan:
      1. the log holds at least ``checkpoint.size`` records (not truncated);
      2. the root of its first ``checkpoint.size`` records is the signed root.
    Raises `audit.CheckpointError` naming the failed step, and `ValueError`
    if `tree` was not read for the checkpoint's size (see `read_tree`).
    """
    if tree.hashes.old_size != checkpoint.size:
        raise ValueError(
            f"the tree was read for size {tree.hashes.old_size}, "
            f"not the checkpoint's {checkpoint.size}"
        )

    # Step 1: every signed record is still there.
    if tree.summary.count < checkpoint.size:
        raise audit.CheckpointError(
            f"the log holds {tree.summary.count} records, but a checkpoint "
            f"was signed at size {checkpoint.size}: records cut from the end "
            "(log truncated)"
        )

    # Step 2: ... and unchanged.
    derived = tree.hashes.old_root()
    if derived != checkpoint.root_hash:
        raise audit.CheckpointError(
            f"the Merkle root of the first {checkpoint.size} records is "
            f"{derived.hex()}, but the checkpoint signed at that size says "
            f"{checkpoint.root_hash.hex()} (records rewritten)"
        )


class CheckpointService:
    """Signs checkpoints of one store's audit log with one signer key."""

    def __init__(
        self,
        store: Store,
        signer_key_text: str,
        origin: str = DEFAULT_ORIGIN,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._key = signer_key_text
        self.origin = origin
        self.key_name = key_name(signer_key_text)
        self._clock = clock
        self._lock = threading.Lock()

    def check(self) -> StoredCheckpoint | None:
        """Re-derive the last signed root from the stored records.

        Returns the last checkpoint (None if there is none); raises
        `audit.CheckpointError` if the records no longer give it.
        """
        with self._lock:
            stored, last = self._last()
            if last is not None:
                check_tree(self._tree(last.size), last)
            return stored

    def sign_now(self) -> StoredCheckpoint | None:
        """Sign the current head; None if the log did not grow since the last.

        Plan:
          1. read the audit head and the last stored checkpoint;
          2. skip when the log did not grow;
          3. verify the chain up to the head, hashing its tree on the way;
          4. the records still give the last signed root at its size;
          5. prove the new tree consistent with the last and sign it;
          6. store the signed checkpoint.
        Raises `audit.CheckpointError` naming the failed step (logged).
        """
        with self._lock:
            try:
                return self._sign()
            except audit.CheckpointError as exc:
                log.error("refusing to sign an audit checkpoint: %s", exc)
                raise

    def _sign(self) -> StoredCheckpoint | None:
        # Step 1: where the log ends, and what was signed last.
        head_seq, _ = self._store.audit_head()
        _, last = self._last()

        # Step 2: nothing new to sign.
        last_size = 0 if last is None else last.size
        if head_seq == last_size:
            log.debug("audit log still at size %d; no checkpoint signed", head_seq)
            return None

        # Step 3: the chain verifies up to the head.
        tree = self._tree(last_size)

        # Step 4: the log still holds the last signed tree.
        if last is not None:
            check_tree(tree, last)

        # Step 5: the new head extends it, proven and signed.
        size = tree.summary.count
        checkpoint = audit.Checkpoint(self.origin, size, tree.hashes.root())
        proof = tree.hashes.consistency_proof() if last_size else []
        note = audit.CheckpointSigner(self._key, last).sign(checkpoint, proof)

        # Step 6: keep it, for the next signing and for export.
        stored = self._store.save_checkpoint(
            size, checkpoint.root_hash.hex(), note, self.key_name, self._clock()
        )
        log.info(
            "audit checkpoint signed origin=%s size=%d root=%s key=%s",
            self.origin, size, stored.root_hex, self.key_name,
        )  # fmt: skip
        return stored

    def _last(self) -> tuple[StoredCheckpoint | None, audit.Checkpoint | None]:
        stored = self._store.latest_checkpoint()
        if stored is None:
            return None, None
        checkpoint = parse_stored(stored)
        return stored, checkpoint

    def _tree(self, old_size: int) -> Tree:
        """Verify the chain up to the audit head; refuse if it ends elsewhere."""
        head_seq, head_hash = self._store.audit_head()
        try:
            tree = read_tree(self._store.audit_records(), head_seq, old_size)
        except audit.AuditError as exc:
            raise audit.CheckpointError(
                f"the audit chain does not verify: {exc}"
            ) from exc
        summary = tree.summary
        if (summary.head_seq, summary.head_hash) != (head_seq, head_hash):
            raise audit.CheckpointError(
                f"the store's audit head is record {head_seq} ({head_hash[:16]}...) "
                f"but the chain ends at record {summary.head_seq} "
                f"({summary.head_hash[:16]}...): records were removed or added"
            )
        return tree


def parse_stored(stored: StoredCheckpoint) -> audit.Checkpoint:
    """The checkpoint in a stored note; `audit.CheckpointError` if it disagrees
    with the size and root stored beside it."""
    checkpoint = audit.read_unverified(stored.note)
    if (checkpoint.size, checkpoint.root_hash.hex()) != (stored.size, stored.root_hex):
        raise audit.CheckpointError(
            f"stored checkpoint {stored.id}: its note says size {checkpoint.size} "
            f"root {checkpoint.root_hash.hex()}, its row says size {stored.size} "
            f"root {stored.root_hex} (checkpoints table edited?)"
        )
    return checkpoint


class PeriodicSigner:
    """Signs a checkpoint every `interval` seconds and once at `stop`.

    Fails closed for signing only: once the stored records contradict a
    signed checkpoint, it logs an error and never signs again in this process.
    """

    def __init__(self, service: CheckpointService, interval: float) -> None:
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.disabled = False

    def start(self) -> bool:
        """Check the last checkpoint, then start signing; False if refused."""
        try:
            self._service.check()
        except audit.CheckpointError as exc:
            self._disable(exc)
            return False
        self._thread = threading.Thread(
            target=self._run, name="audit-checkpoints", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop the thread and sign the final head (unless signing failed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._sign_once()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._sign_once():
                return

    def _sign_once(self) -> bool:
        if self.disabled:
            return False
        try:
            self._service.sign_now()
        except audit.CheckpointError as exc:
            self._disable(exc)
            return False
        except Exception:
            # The store may be briefly unreachable: try again next time.
            log.exception("audit checkpoint not signed; will retry")
        return True

    def _disable(self, exc: audit.CheckpointError) -> None:
        self.disabled = True
        log.error(
            "audit checkpoint signing disabled: %s; decisions continue, but no "
            "checkpoint will be signed until the log is investigated",
            exc,
        )
