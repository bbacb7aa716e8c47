"""Verification of an audit hash chain, one record at a time.

`verify_chain` proves that a sequence of records is internally consistent:
numbered 1, 2, 3 ... with no gap, each linked to its predecessor's hash, each
hash matching its own fields. It streams, holding only the previous record's
seq and hash. It cannot see records cut from the end, nor a chain rewritten
from some record on; compare the returned head with a head recorded elsewhere
(a checkpoint) for that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit._record import GENESIS_HASH, AuditRecord, record_hash
from audit.errors import CanonicalizationError, ChainBrokenError


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """What a verified chain ends with: its length, last seq and last hash.

    For an empty chain ``head_seq`` is 0 and ``head_hash`` is `GENESIS_HASH`.
    """

    count: int
    head_seq: int
    head_hash: str


def verify_chain(records: Iterable[AuditRecord]) -> ChainSummary:
    """Verify ``records`` in order and return the summary of the chain.

    Each record is checked in three steps (see `_verify_record`): its seq
    follows on, its prev_hash names the previous hash, its hash is its own.
    Raises `ChainBrokenError` for the first record that fails a check.
    """
    count, head_seq, head_hash = 0, 0, GENESIS_HASH
    for record in records:
        count += 1
        _verify_record(record, count, head_seq, head_hash)
        head_seq, head_hash = record.seq, record.hash
    return ChainSummary(count=count, head_seq=head_seq, head_hash=head_hash)


def _verify_record(
    record: AuditRecord, position: int, prev_seq: int, prev_hash: str
) -> None:
    """Check the record at 1-based ``position``, given the previous one's seq/hash.

    Plan:
      1. its seq is the previous seq + 1 (1 for the first record);
      2. its prev_hash is the previous record's hash (GENESIS_HASH for the first);
      3. its stored hash equals the hash recomputed from its fields.
    """
    # Step 1: the numbering continues with no gap, repeat or swap. Since the
    # chain starts at 1, the expected seq is the position.
    if record.seq != position:
        raise ChainBrokenError(
            record.seq, _seq_reason(record.seq, position, prev_seq), position
        )

    # Step 2: the record names its predecessor's hash.
    if record.prev_hash != prev_hash:
        predecessor = f"record {prev_seq}" if prev_seq else "the genesis value"
        raise ChainBrokenError(
            record.seq,
            f"prev_hash {_short(record.prev_hash)} does not match the hash "
            f"{_short(prev_hash)} of {predecessor} (record deleted or inserted?)",
            position,
        )

    # Step 3: the stored hash is the hash of the record's own fields.
    recomputed = _recompute(record, position)
    if record.hash != recomputed:
        raise ChainBrokenError(
            record.seq,
            f"stored hash {_short(record.hash)} does not match recomputed "
            f"{_short(recomputed)} (record edited?)",
            position,
        )


def _seq_reason(seq: int, position: int, prev_seq: int) -> str:
    if position == 1:
        expected = "the chain must start at 1"
    else:
        expected = f"expected {position} after record {prev_seq}"
    return (
        f"found at position {position} with seq {seq}; {expected} "
        "(record deleted, inserted or reordered?)"
    )


def _recompute(record: AuditRecord, position: int) -> str:
    try:
        return record_hash(
            record.seq,
            record.recorded_at,
            record.kind,
            record.body,
            record.prev_hash,
            record.salt,
        )
    except CanonicalizationError as exc:
        raise ChainBrokenError(
            record.seq, f"cannot be hashed: {exc}", position
        ) from exc


def _short(digest: str) -> str:
    return digest[:12] + "…" if len(digest) > 12 else digest
