"""Helpers shared by the tests (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from gateway.service import ContactInput, Gateway
from gateway.store import ContactRef

AT = datetime(2026, 12, 8, 18, 30, tzinfo=UTC)  # 13:30 in New York
NY_PHONE = "+12125550123"


GatewayFactory = Callable[..., Gateway]


def add_contact(
    gateway: Gateway,
    external_id: str = "c1",
    *,
    phone: str = NY_PHONE,
    consent: bool = True,
    **fields: object,
) -> ContactRef:
    """Create a contact (granted SMS marketing consent unless told otherwise)."""
    gateway.upsert_contact(ContactInput(external_id=external_id, phone=phone, **fields))  # type: ignore[arg-type]
    ref = ContactRef(external_id=external_id)
    if consent:
        gateway.record_consent(
            ref, channel="sms", purpose="marketing", granted=True, source="web_form"
        )
    return ref
