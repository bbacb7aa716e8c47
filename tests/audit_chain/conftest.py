"""Fixtures shared by the audit tests: chains of records built with make_record."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from audit import AuditRecord, make_record

ChainFactory = Callable[[int], list[AuditRecord]]
"""The type of the ``chain_of`` fixture."""

KINDS = ("decision", "delivery", "consent", "event")


def build_chain(length: int) -> list[AuditRecord]:
    """Return ``length`` linked records with varied kinds, bodies and times."""
    records: list[AuditRecord] = []
    for index in range(length):
        body = {
            "contact": f"ct_{index:04d}",
            "decision": "allow" if index % 3 else "deny",
            "rules": [{"id": "CO-03", "outcome": "matched"}],
            "note": "Zoë's café ☕",
        }
        recorded_at = f"2026-12-04T15:{index // 60 % 60:02d}:{index % 60:02d}.000123Z"
        prev = records[-1] if records else None
        records.append(make_record(prev, KINDS[index % 4], body, recorded_at))
    return records


@pytest.fixture
def chain_of() -> ChainFactory:
    """A factory: ``chain_of(n)`` is a valid chain of n records."""
    return build_chain
