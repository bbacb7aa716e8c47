"""JSON lines export and import of audit records.

An export is UTF-8 text, one record per line, each line the canonical JSON of
`AuditRecord.to_dict` followed by "\\n". Reading is strict, because an export
is evidence: a line that is not one well-formed record (bad UTF-8, bad JSON, a
repeated key, NaN, a missing, extra or mis-typed field) raises
`AuditFormatError` naming its line number. Reading does not verify the chain;
pass the records to `verify_chain` for that. Both functions stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from audit._canonical import canonical_json
from audit._record import AuditRecord
from audit.errors import AuditFormatError


def write_jsonl(records: Iterable[AuditRecord], fp: IO[bytes]) -> int:
    """Write ``records`` to the binary file ``fp``, one per line; return the count."""
    count = 0
    for record in records:
        fp.write(canonical_json(record.to_dict()) + b"\n")
        count += 1
    return count


def read_jsonl(fp: Iterable[bytes]) -> Iterator[AuditRecord]:
    """Yield the records of a binary file (or other iterable of byte lines)."""
    for number, line in enumerate(fp, start=1):
        yield _parse_line(line, number)


def _parse_line(line: bytes, number: int) -> AuditRecord:
    data = _load_object(line, number)
    try:
        return AuditRecord.from_dict(data)
    except AuditFormatError as exc:
        raise AuditFormatError(exc.reason, line=number) from exc


def _load_object(line: bytes, number: int) -> dict[str, Any]:
    if not line.strip():
        raise AuditFormatError("empty line; expected one audit record", line=number)
    try:
        data = json.loads(
            line.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise AuditFormatError(f"not valid JSON: {exc}", line=number) from exc
    if not isinstance(data, dict):
        raise AuditFormatError(
            f"expected a JSON object, found {type(data).__name__}", line=number
        )
    return data


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object repeats a key")
    return obj


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
