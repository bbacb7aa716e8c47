"""Tollgate's tamper-evident audit log: canonical JSON records in a hash chain.

Each record holds the SHA-256 of its predecessor, so editing, deleting,
inserting or reordering any record is detected by `verify_chain`. The records
are also the leaves of an RFC 6962 Merkle tree whose head is published as a
signed C2SP checkpoint: that catches records cut from the end, and lets one
record be proven with a small `RecordProof`. The package knows nothing of the
gateway: an export can be verified with it alone
(``python -m audit verify FILE.jsonl``).
"""

from audit._canonical import canonical_json
from audit._chain import ChainSummary, verify_chain
from audit._checkpoint import (
    Checkpoint,
    CheckpointSigner,
    open_checkpoint,
    read_unverified,
)
from audit._jsonl import read_jsonl, write_jsonl
from audit._merkle import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    CompactRange,
    StreamingTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from audit._note import Verifier, generate_key, parse_verifier, sign_note, verify_note
from audit._proof import (
    RecordProof,
    prove,
    record_leaf,
    record_leaf_hashes,
    verify_record_proof,
)
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
    CheckpointError,
    KeyFormatError,
    PersonalDataError,
    ProofError,
    SignatureError,
)

__all__ = [
    "EMPTY_ROOT",
    "GENESIS_HASH",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "RECORD_HASH_PREFIX",
    "AuditError",
    "AuditFormatError",
    "AuditRecord",
    "CanonicalizationError",
    "ChainBrokenError",
    "ChainSummary",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "CompactRange",
    "KeyFormatError",
    "PersonalDataError",
    "ProofError",
    "RecordProof",
    "SignatureError",
    "StreamingTree",
    "Verifier",
    "canonical_json",
    "consistency_proof",
    "generate_key",
    "inclusion_proof",
    "leaf_hash",
    "make_record",
    "node_hash",
    "open_checkpoint",
    "parse_verifier",
    "prove",
    "read_jsonl",
    "read_unverified",
    "record_hash",
    "record_leaf",
    "record_leaf_hashes",
    "root",
    "sign_note",
    "verify_chain",
    "verify_consistency",
    "verify_inclusion",
    "verify_note",
    "verify_record_proof",
    "write_jsonl",
]
