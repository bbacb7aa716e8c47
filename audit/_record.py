"""Audit records and the hash that links each one to its predecessor.

Invariants of a record made by `make_record`:

- ``seq`` counts from 1 with no gap, and ``prev_hash`` is the previous record's
  ``hash`` (`GENESIS_HASH` for record 1);
- ``hash`` is `record_hash` of the other fields, so editing any field of
  any record, or moving it, breaks the chain from that record on;
- ``salt`` is 32 random bytes in hex, hashed with the record. The record is
  also a leaf of the log's Merkle tree, and an inclusion proof for one record
  shows the hashes of others; the salt makes those hashes unguessable, so a
  proof reveals nothing about any other record (a low-entropy body such as
  ``{"decision": "deny"}`` cannot be confirmed by hashing guesses). A record
  with salt "" (made before salts existed) hashes and exports exactly as
  before: the ``salt`` member is then left out.
- ``body`` is a plain copy of canonical JSON holding no phone number or e-mail
  address (see `audit._privacy`).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from audit._canonical import canonical_json, canonical_json_at
from audit._privacy import check_no_personal_data
from audit.errors import AuditFormatError, CanonicalizationError

GENESIS_HASH: Final = "0" * 64
"""The ``prev_hash`` of record 1: there is no record before it."""

RECORD_HASH_PREFIX: Final = b"tollgate-audit-record-v1\x00"
"""Domain-separation tag hashed before every record.

Like the 0x00 leaf and 0x01 node prefixes of RFC 6962 section 2.1, it keeps a
record hash from ever equalling a hash of some other structure (a Merkle node,
a checkpoint), and its version number keeps a future record format apart.
"""

_FIELDS: Final = ("seq", "recorded_at", "kind", "body", "prev_hash", "hash")
_OPTIONAL_FIELDS: Final = ("salt",)
SALT_BYTES: Final = 32
"""Random bytes in a record's salt (written as 64 hex digits)."""
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z"
)
_TIMESTAMP_EXAMPLE: Final = "2026-12-04T15:00:00.123456Z"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the audit log.

    ``recorded_at`` is an RFC 3339 UTC timestamp such as
    ``2026-12-04T15:00:00.123456Z``; ``kind`` is a lower-case word such as
    ``decision``, ``delivery``, ``consent`` or ``event``; ``prev_hash`` and
    ``hash`` are lower-case hex SHA-256 digests; ``salt`` is 64 lower-case
    hex digits, or "" for a record made before salts existed.
    """

    seq: int
    recorded_at: str
    kind: str
    body: Mapping[str, Any]
    prev_hash: str
    hash: str
    salt: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON object (``body`` is not copied).

        ``salt`` is included only when it is not "", so unsalted records
        export byte for byte as they did before salts existed.
        """
        data = {name: getattr(self, name) for name in _FIELDS}
        if self.salt:
            data["salt"] = self.salt
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Build a record from untrusted JSON, checking every field's shape.

        Raises `AuditFormatError` naming the first bad field. The hash is not
        checked here; that is `verify_chain`'s job.
        """
        _check_field_names(data)
        _check_format(_is_seq(data["seq"]), "seq", "a positive integer")
        _check_format(
            _is_timestamp(data["recorded_at"]),
            "recorded_at",
            f"an RFC 3339 UTC timestamp such as {_TIMESTAMP_EXAMPLE}",
        )
        _check_format(_is_kind(data["kind"]), "kind", "a lower-case word")
        _check_body(data["body"])
        for name in ("prev_hash", "hash"):
            _check_format(_is_hash(data[name]), name, "64 lower-case hex digits")
        salt = data.get("salt", "")
        _check_format(
            salt == "" or _is_hash(salt), "salt", "64 lower-case hex digits or absent"
        )
        return cls(**{name: data[name] for name in _FIELDS}, salt=salt)


def record_hash(
    seq: int,
    recorded_at: str,
    kind: str,
    body: Mapping[str, Any],
    prev_hash: str,
    salt: str = "",
) -> str:
    """Return the hex SHA-256 of `RECORD_HASH_PREFIX` + the record's canonical JSON.

    The ``salt`` member is hashed only when not "", so records made before
    salts existed keep their hashes. Raises `CanonicalizationError` if
    ``body`` is not canonical JSON.
    """
    fields: dict[str, Any] = {
        "seq": seq,
        "recorded_at": recorded_at,
        "kind": kind,
        "body": body,
        "prev_hash": prev_hash,
    }
    if salt:
        fields["salt"] = salt
    return hashlib.sha256(RECORD_HASH_PREFIX + canonical_json(fields)).hexdigest()


def make_record(
    prev: AuditRecord | None,
    kind: str,
    body: Mapping[str, Any],
    recorded_at: str,
    salt: str | None = None,
) -> AuditRecord:
    """Return the record that follows ``prev`` (or the first record, if None).

    ``salt`` defaults to 32 fresh random bytes in hex; pass "" only to build
    an unsalted record as older versions did.
    Raises `PersonalDataError` if the body holds a phone number or e-mail
    address, `CanonicalizationError` if it is not canonical JSON, and
    `ValueError`/`TypeError` for a malformed ``kind``, timestamp or body type.
    """
    _check_arguments(kind, body, recorded_at)
    check_no_personal_data(body, "body")
    plain_body = json.loads(canonical_json_at(body, "body"))
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    if salt is None:
        salt = secrets.token_hex(SALT_BYTES)
    elif salt and not _is_hash(salt):
        raise ValueError(f"salt must be 64 lower-case hex digits or '': {salt!r}")
    digest = record_hash(seq, recorded_at, kind, plain_body, prev_hash, salt)
    return AuditRecord(seq, recorded_at, kind, plain_body, prev_hash, digest, salt)


def _check_arguments(kind: str, body: Mapping[str, Any], recorded_at: str) -> None:
    if not _is_kind(kind):
        raise ValueError(f"kind must be a lower-case word such as 'decision': {kind!r}")
    if not isinstance(body, Mapping):
        raise TypeError(f"body must be a mapping, not {type(body).__name__}")
    if not _is_timestamp(recorded_at):
        raise ValueError(
            f"recorded_at must be an RFC 3339 UTC timestamp such as "
            f"{_TIMESTAMP_EXAMPLE}: {recorded_at!r}"
        )


def _check_field_names(data: Mapping[str, Any]) -> None:
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise AuditFormatError(f"record lacks field(s) {', '.join(missing)}")
    extra = [name for name in data if name not in _FIELDS + _OPTIONAL_FIELDS]
    if extra:
        raise AuditFormatError(
            f"record has {len(extra)} unexpected field(s); expected only "
            f"{', '.join(_FIELDS)} (and optionally salt)"
        )


def _check_format(ok: bool, name: str, expectation: str) -> None:
    if not ok:
        raise AuditFormatError(f"field {name!r} must be {expectation}")


def _check_body(body: object) -> None:
    if not isinstance(body, Mapping):
        raise AuditFormatError(
            f"field 'body' must be a JSON object, not {type(body).__name__}"
        )
    try:
        canonical_json_at(body, "body")
    except CanonicalizationError as exc:
        raise AuditFormatError(str(exc)) from exc


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_kind(value: object) -> bool:
    return isinstance(value, str) and _KIND.fullmatch(value) is not None


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and _HEX_HASH.fullmatch(value) is not None


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
