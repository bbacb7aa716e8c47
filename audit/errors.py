"""The exceptions of the audit package: one root, every name ending in ``Error``.

Bad audit data (a body that is not canonical JSON, personal data in a body, a
malformed export line, a broken chain) raises a subclass of `AuditError`.
Misuse of the API (a malformed ``kind`` or timestamp from the calling code)
raises `ValueError` or `TypeError` instead.
"""

from __future__ import annotations


class AuditError(Exception):
    """Root of every error the audit package raises on bad audit data."""


class CanonicalizationError(AuditError):
    """A value cannot be written as canonical JSON.

    ``path`` names the offending value, e.g. ``body.amount`` or ``body.items[2]``
    (empty for the top-level value).
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path or 'the top-level value'} {problem}")


class PersonalDataError(AuditError):
    """A record body holds what looks like a phone number or e-mail address.

    The message names where, never the value itself.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path} {problem}; audit records must carry the contact's "
            "pseudonymous id, never a phone number or e-mail address"
        )


class AuditFormatError(AuditError):
    """An exported record is malformed; ``line`` is its 1-based line number."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(reason if line is None else f"line {line}: {reason}")


class ChainBrokenError(AuditError):
    """The first record of a chain that fails verification.

    ``seq`` is the sequence number stored in the failing record, ``position`` its
    1-based place in the chain as read, and ``reason`` says which check failed.
    """

    def __init__(self, seq: int, reason: str, position: int) -> None:
        self.seq = seq
        self.reason = reason
        self.position = position
        super().__init__(f"audit record {seq}: {reason}")


class ProofError(AuditError):
    """A Merkle inclusion or consistency proof does not verify (RFC 9162 2.1.3)."""


class SignatureError(AuditError):
    """A signed note is malformed, or carries no valid signature by a trusted key."""


class KeyFormatError(AuditError):
    """A signer or verifier key text is not in the C2SP signed-note key format."""


class CheckpointError(AuditError):
    """A checkpoint is malformed, or a new head is inconsistent with a signed one."""
