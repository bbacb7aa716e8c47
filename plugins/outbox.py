"""The ``outbox`` channel: delivered messages appended as JSON lines to a file.

It stands in for a real SMS gateway in the demo and the tests, so that one can
see exactly what left the gateway. It serves the channel ``outbox`` and the
channels listed in the setting ``outbox_channels``, e.g. ``sms`` or
``sms:phone,mail:email`` (the demo uses ``sms``). The
file is ``<data_dir>/outbox.jsonl`` unless ``TOLLGATE_OUTBOX`` names another.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

from gateway.hookspecs import DeliveryResult, OutboundMessage, hookimpl


class OutboxPlugin:
    """Appends each delivered message to a JSON-lines file."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._channels: dict[str, str] = {"outbox": "phone"}
        self._lock = threading.Lock()

    @hookimpl
    def tollgate_configure(self, settings: Mapping[str, str]) -> None:
        path = settings.get("outbox_path") or str(
            Path(settings.get("data_dir", ".")) / "outbox.jsonl"
        )
        self._path = Path(path)
        self._channels = {"outbox": "phone"}
        for item in settings.get("outbox_channels", "").split(","):
            name, _, kind = item.strip().partition(":")
            if name:
                self._channels[name] = kind or "phone"

    @hookimpl
    def tollgate_channels(self) -> Mapping[str, str]:
        return dict(self._channels)

    @hookimpl
    def tollgate_deliver(self, message: OutboundMessage) -> DeliveryResult | None:
        if message.channel not in self._channels:
            return None
        if self._path is None:
            return DeliveryResult(error="outbox is not configured")
        provider_id = f"outbox-{uuid.uuid4().hex}"
        line = json.dumps(_entry(message, provider_id), sort_keys=True)
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        return DeliveryResult(provider_message_id=provider_id)


def _entry(message: OutboundMessage, provider_id: str) -> dict[str, object]:
    return {
        "provider_message_id": provider_id,
        "channel": message.channel,
        "to": message.to,
        "body": message.body,
        "contact_id": message.contact_id,
        "campaign": message.campaign,
        "purpose": message.purpose,
        "idempotency_key": message.idempotency_key,
        "audit_seq": message.audit_seq,
    }


plugin = OutboxPlugin()
