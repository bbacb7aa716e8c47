"""Checkpoints (https://c2sp.org/tlog-checkpoint) and a signer that never forks.

A checkpoint is the note text naming a log's head: the origin line, the tree
size in decimal, the base64 root hash, optional extension lines, each ending
in a newline. Signed as a C2SP note it commits the log to its first ``size``
records: anyone holding it can later detect records cut from the end or
rewritten.

Invariant of `CheckpointSigner`: every head it signs is consistent with the
previous one it signed (never smaller, never a different root at the same
size, and proven an extension by an RFC 9162 consistency proof), so two
signed checkpoints of one signer never show a forked log.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from audit._merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from audit._note import sign_note, split_note, verify_note
from audit.errors import CheckpointError, ProofError

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The signed head of a log: origin, tree size and 32-byte root hash."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        """Return the checkpoint as note text, ending with a newline.

        Raises `ValueError` for an origin or extension that is empty or holds
        a newline, a negative size or a root that is not 32 bytes.
        """
        for line in (self.origin, *self.extensions):
            if not line or "\n" in line:
                raise ValueError(
                    f"checkpoint lines must be non-empty, one line: {line!r}"
                )
        if self.size < 0 or len(self.root_hash) != HASH_SIZE:
            raise ValueError("checkpoint needs a size >= 0 and a 32-byte root hash")
        root_b64 = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root_b64, *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; raise `CheckpointError` if malformed."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint: text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"checkpoint: expected origin, size and root lines, found {len(lines)}"
            )
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise CheckpointError("checkpoint: line 1 (origin) is empty")
        if not _DECIMAL.fullmatch(size_text):
            raise CheckpointError(
                f"checkpoint: line 2 (size) must be a decimal number without "
                f"leading zeros, found {size_text[:40]!r}"
            )
        root_hash = _decode_root(root_text)
        if any(not line for line in extensions):
            raise CheckpointError("checkpoint: an extension line is empty")
        return cls(origin, int(size_text), root_hash, tuple(extensions))


def open_checkpoint(note: str, verifier: str) -> Checkpoint:
    """Verify the signed checkpoint ``note`` with ``verifier`` and parse it.

    Raises `SignatureError` if the signature does not verify, `CheckpointError`
    if the signed text is not a checkpoint.
    """
    return Checkpoint.parse(verify_note(note, [verifier]))


def read_unverified(note: str) -> Checkpoint:
    """Parse the checkpoint in a signed note WITHOUT checking its signature.

    For building proofs only; a verifier must use `open_checkpoint`.
    """
    text, _ = split_note(note)
    return Checkpoint.parse(text)


class CheckpointSigner:
    """Signs checkpoints of one log, refusing any head that would fork it.

    ``last`` is the most recent checkpoint this key signed (for example read
    back from storage at start-up); None if it has signed none.
    """

    def __init__(self, signer_key: str, last: Checkpoint | None = None) -> None:
        self._signer_key = signer_key
        self._last = last

    @property
    def last(self) -> Checkpoint | None:
        """The most recent checkpoint signed (or given at construction)."""
        return self._last

    def sign(self, checkpoint: Checkpoint, proof: Sequence[bytes] = ()) -> str:
        """Return ``checkpoint`` as a signed note, if consistent with the last one.

        ``proof`` is the RFC 9162 consistency proof from the last signed size
        to ``checkpoint.size`` (empty for the first checkpoint or equal sizes).

        Plan:
          1. the origin is the same as the last checkpoint's;
          2. the tree did not shrink;
          3. at the same size, the root is the same;
          4. at a larger size, the proof shows the new tree extends the old;
          5. sign, and remember the checkpoint as the last one.
        Raises `CheckpointError` naming the failed step.
        """
        last = self._last
        if last is not None:
            # Step 1: one signer, one log.
            if checkpoint.origin != last.origin:
                raise CheckpointError(
                    f"checkpoint: origin {checkpoint.origin!r} differs from the "
                    f"last signed origin {last.origin!r}"
                )

            # Step 2: a log only grows.
            if checkpoint.size < last.size:
                raise CheckpointError(
                    f"checkpoint: size {checkpoint.size} is smaller than the last "
                    f"signed size {last.size} (log truncated?)"
                )

            # Step 3: one size, one root.
            if checkpoint.size == last.size and checkpoint.root_hash != last.root_hash:
                raise CheckpointError(
                    f"checkpoint: root {checkpoint.root_hash.hex()} at size "
                    f"{checkpoint.size} differs from the last signed root "
                    f"{last.root_hash.hex()} (log rewritten?)"
                )

            # Step 4: the new tree keeps the old one as its prefix.
            if checkpoint.size > last.size:
                self._check_extends(last, checkpoint, proof)

        # Step 5: sign and move on.
        note = sign_note(checkpoint.to_text(), self._signer_key)
        self._last = checkpoint
        return note

    @staticmethod
    def _check_extends(
        last: Checkpoint, checkpoint: Checkpoint, proof: Sequence[bytes]
    ) -> None:
        if last.size == 0:
            if last.root_hash != EMPTY_ROOT:
                raise CheckpointError(
                    "checkpoint: last signed empty tree has a bad root"
                )
            return
        try:
            verify_consistency(
                last.size, checkpoint.size, last.root_hash, checkpoint.root_hash, proof
            )
        except ProofError as exc:
            raise CheckpointError(
                f"checkpoint: size {checkpoint.size} is not proven consistent with "
                f"the last signed size {last.size}: {exc}"
            ) from exc


def _decode_root(text: str) -> bytes:
    try:
        root_hash = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CheckpointError("checkpoint: line 3 (root hash) is not base64") from exc
    if len(root_hash) != HASH_SIZE:
        raise CheckpointError(
            f"checkpoint: line 3 (root hash) holds {len(root_hash)} bytes, "
            f"expected {HASH_SIZE}"
        )
    return root_hash
