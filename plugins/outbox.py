"""The ``outbox`` channel: delivered messages appended as JSON lines to a file.

It stands in for a real SMS gateway in the demo and the tests, so that one can
see exactly what left the gateway. It serves the channels listed in the
setting ``outbox_channels`` and no others, e.g. ``sms`` or
``sms:phone,mail:email`` (the demo uses ``sms``). A message delivered again
with the same channel and idempotency key is not written twice. The
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
        self._channels: dict[str, str] = {}
        self._lock = threading.Lock()
        self._delivered: dict[tuple[str, str], str] = {}

    @hookimpl
    def tollgate_configure(self, settings: Mapping[str, str]) -> None:
        path = settings.get("outbox_path") or str(
            Path(settings.get("data_dir", ".")) / "outbox.jsonl"
        )
        self._path = Path(path)
        self._load_delivered()
        self._channels = {}
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
        with self._lock:
            key = (message.channel, message.idempotency_key)
            if key in self._delivered:  # a re-delivery: answer as the first time
                return DeliveryResult(provider_message_id=self._delivered[key])
            provider_id = f"outbox-{uuid.uuid4().hex}"
            line = json.dumps(_entry(message, provider_id), sort_keys=True)
            with self._path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
            self._delivered[key] = provider_id
        return DeliveryResult(provider_message_id=provider_id)

    def _load_delivered(self) -> None:
        """Remember what the file already holds, to de-duplicate re-deliveries."""
        self._delivered = {}
        if self._path is None or not self._path.exists():
            return
        with self._path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    key = (entry["channel"], entry["idempotency_key"])
                    self._delivered[key] = entry["provider_message_id"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash is not a delivery


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
