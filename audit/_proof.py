"""Single-record proof files: one record, its inclusion proof and a checkpoint.

A `RecordProof` lets anyone holding the log's verifier key check that one
record is in the log the key signed, without the rest of the log. Each
record's leaf in the log's Merkle tree is the canonical JSON of
`AuditRecord.to_dict` (hash, prev_hash and salt included); the salt keeps the
sibling hashes in the proof from revealing anything about other records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from audit._canonical import canonical_json
from audit._checkpoint import open_checkpoint, read_unverified
from audit._merkle import HASH_SIZE, StreamingTree, leaf_hash, verify_inclusion
from audit._record import AuditRecord, record_hash
from audit.errors import (
    AuditFormatError,
    CanonicalizationError,
    ChainBrokenError,
    ProofError,
)

PROOF_FORMAT: Final = "tollgate-record-proof-v1"
"""The ``format`` member of every proof file."""

_KEYS: Final = frozenset(
    {"format", "record", "index", "tree_size", "inclusion", "checkpoint"}
)


def record_leaf(record: AuditRecord) -> bytes:
    """Return the Merkle leaf bytes of ``record``: its canonical JSON."""
    return canonical_json(record.to_dict())


def record_leaf_hashes(records: Iterable[AuditRecord]) -> list[bytes]:
    """Return the RFC 6962 leaf hashes of ``records`` in order."""
    return [leaf_hash(record_leaf(record)) for record in records]


@dataclass(frozen=True, slots=True)
class RecordProof:
    """One record with the evidence that leaf ``index`` of a signed log is it.

    ``inclusion`` lists the proof's hashes in lower-case hex, leaf to root;
    ``checkpoint_note`` is the signed checkpoint whose tree holds the record.
    """

    record: AuditRecord
    index: int
    tree_size: int
    inclusion: list[str]
    checkpoint_note: str

    def to_json(self) -> str:
        """Return the proof file's text: one JSON object with a final newline."""
        data = {
            "format": PROOF_FORMAT,
            "record": self.record.to_dict(),
            "index": self.index,
            "tree_size": self.tree_size,
            "inclusion": list(self.inclusion),
            "checkpoint": self.checkpoint_note,
        }
        return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> RecordProof:
        """Parse a proof file; raise `AuditFormatError` naming a bad member."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise AuditFormatError(f"proof file: not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or set(data) != _KEYS:
            raise AuditFormatError(
                "proof file: expected an object with exactly the members "
                + ", ".join(sorted(_KEYS))
            )
        if data["format"] != PROOF_FORMAT:
            raise AuditFormatError(
                f"proof file: format {data['format']!r}, expected {PROOF_FORMAT!r}"
            )
        record = _record_member(data["record"])
        for name in ("index", "tree_size"):
            if not _is_count(data[name]):
                raise AuditFormatError(f"proof file: {name!r} must be an integer >= 0")
        inclusion = data["inclusion"]
        if not isinstance(inclusion, list) or not all(_is_hex(h) for h in inclusion):
            raise AuditFormatError(
                "proof file: 'inclusion' must be a list of 64-digit lower-case hex"
            )
        if not isinstance(data["checkpoint"], str):
            raise AuditFormatError("proof file: 'checkpoint' must be a string")
        return cls(
            record, data["index"], data["tree_size"], inclusion, data["checkpoint"]
        )


def prove(
    records: Iterable[AuditRecord], seq: int, checkpoint_note: str
) -> RecordProof:
    """Return the proof that record ``seq`` is in the log ``checkpoint_note`` signs.

    ``records`` is the log from record 1 on, at least as long as the
    checkpoint's size; it is read once, in O(log n) memory. Raises
    `ValueError` if ``seq`` is not in the checkpoint's tree, `ProofError` if
    the records do not hash to the checkpoint's root (not the log that was
    signed).
    """
    checkpoint = read_unverified(checkpoint_note)
    if not 1 <= seq <= checkpoint.size:
        raise ValueError(f"seq {seq} is not in a checkpoint of size {checkpoint.size}")
    tree = StreamingTree(checkpoint.size, index=seq - 1)
    record = None
    for candidate in records:
        if tree.size == checkpoint.size:
            break
        if tree.size == seq - 1:
            record = candidate
        tree.append(leaf_hash(record_leaf(candidate)))
    if record is None or tree.size < checkpoint.size:
        raise ValueError(
            f"{tree.size} records given for a checkpoint of size {checkpoint.size}"
        )
    if tree.root() != checkpoint.root_hash:
        raise ProofError(
            f"the first {checkpoint.size} records do not hash to the checkpoint root "
            f"{checkpoint.root_hash.hex()}"
        )
    if record.seq != seq:
        raise ValueError(f"record at position {seq} has seq {record.seq}")
    path = [node.hex() for node in tree.inclusion_proof()]
    return RecordProof(record, seq - 1, checkpoint.size, path, checkpoint_note)


def verify_record_proof(proof: RecordProof, verifier_key_text: str) -> None:
    """Check that ``proof.record`` is in the log signed by ``verifier_key_text``.

    Plan:
      1. verify the checkpoint note's signature with the verifier key;
      2. parse the checkpoint; its size is the proof's tree size;
      3. the record sits at the proof's index (seq = index + 1);
      4. recompute the record's leaf hash from its fields;
      5. verify the inclusion proof against the checkpoint's root and size;
      6. the record's stored hash is the hash of its own fields.
    Raises `SignatureError` (step 1), `CheckpointError` (2), `ProofError`
    (2 to 5) or `ChainBrokenError` (6); needs nothing but the proof and key.
    """
    # Step 1: a trusted key signed the checkpoint.
    # Step 2: ... and it is a checkpoint of the claimed size.
    checkpoint = open_checkpoint(proof.checkpoint_note, verifier_key_text)
    if checkpoint.size != proof.tree_size:
        raise ProofError(
            f"record proof: tree size {proof.tree_size} differs from the signed "
            f"checkpoint's size {checkpoint.size}"
        )

    # Step 3: the leaf index and the record's seq agree.
    if proof.index != proof.record.seq - 1:
        raise ProofError(
            f"record proof: leaf index {proof.index} does not hold record "
            f"{proof.record.seq} (expected index {proof.record.seq - 1})"
        )

    # Step 4: the leaf is the record as it stands.
    try:
        leaf = leaf_hash(record_leaf(proof.record))
    except CanonicalizationError as exc:
        raise ProofError(f"record proof: record cannot be hashed: {exc}") from exc

    # Step 5: the leaf is in the signed tree.
    path = [bytes.fromhex(node) for node in proof.inclusion]
    verify_inclusion(leaf, proof.index, checkpoint.size, path, checkpoint.root_hash)

    # Step 6: the record's own hash is intact.
    record = proof.record
    recomputed = record_hash(
        record.seq,
        record.recorded_at,
        record.kind,
        record.body,
        record.prev_hash,
        record.salt,
    )
    if recomputed != record.hash:
        raise ChainBrokenError(
            record.seq,
            f"stored hash {record.hash[:12]}… does not match recomputed "
            f"{recomputed[:12]}… (record edited before it was logged?)",
            record.seq,
        )


def _record_member(value: object) -> AuditRecord:
    if not isinstance(value, dict):
        raise AuditFormatError("proof file: 'record' must be a JSON object")
    try:
        return AuditRecord.from_dict(value)
    except AuditFormatError as exc:
        raise AuditFormatError(f"proof file: record: {exc}") from exc


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hex(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 2 * HASH_SIZE:
        return False
    return all(c in "0123456789abcdef" for c in value)
