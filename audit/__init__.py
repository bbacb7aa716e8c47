"""Tollgate's tamper-evident audit log: canonical JSON records in a hash chain.

Each record holds the SHA-256 of its predecessor, so editing, deleting,
inserting or reordering any record is detected by `verify_chain`. The package
knows nothing of the gateway: an export can be verified with it alone
(``python -m audit verify FILE.jsonl``).
"""

from audit._canonical import canonical_json
from audit._chain import ChainSummary, verify_chain
from audit._jsonl import read_jsonl, write_jsonl
from audit._record import (
    GENESIS_HASH,
    RECORD_HASH_PREFIX,
    AuditRecord,
    make_record,
    record_hash,
)
from audit.errors import (
    AuditError,
    AuditFormatError,
    CanonicalizationError,
    ChainBrokenError,
    PersonalDataError,
)

__all__ = [
    "GENESIS_HASH",
    "RECORD_HASH_PREFIX",
    "AuditError",
    "AuditFormatError",
    "AuditRecord",
    "CanonicalizationError",
    "ChainBrokenError",
    "ChainSummary",
    "PersonalDataError",
    "canonical_json",
    "make_record",
    "read_jsonl",
    "record_hash",
    "verify_chain",
    "write_jsonl",
]
