"""The ``webhook`` channel: each allowed message POSTed as JSON to one URL.

An example of a third-party Tollgate channel plugin. It is configured by the
environment variable ``TOLLGATE_PLUGIN_WEBHOOK_URL`` (seen by the plugin as
the setting ``webhook_url``) and serves no channel while that is empty.

For each message it POSTs ``{contact_id, body, campaign, purpose,
idempotency_key, audit_seq, to}`` with the header ``Idempotency-Key``, so the
receiver can de-duplicate the gateway's re-deliveries. A 2xx answer is a
delivery, with the provider id taken from the answer's JSON ``"id"`` (else
``webhook-<audit_seq>``); anything else is a failed delivery whose error names
the HTTP status or the kind of network error, never the recipient's address.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping

from gateway.hookspecs import DeliveryResult, OutboundMessage, hookimpl

__all__ = ["CHANNEL", "TIMEOUT_SECONDS", "WebhookPlugin", "plugin"]

CHANNEL = "webhook"
TIMEOUT_SECONDS = 5.0

log = logging.getLogger(__name__)


class WebhookPlugin:
    """Forwards messages on channel ``webhook`` to ``settings["webhook_url"]``."""

    def __init__(self) -> None:
        self.url = ""

    @hookimpl
    def tollgate_configure(self, settings: Mapping[str, str]) -> None:
        self.url = settings.get("webhook_url", "").strip()

    @hookimpl
    def tollgate_channels(self) -> Mapping[str, str]:
        return {CHANNEL: "phone"} if self.url else {}

    @hookimpl
    def tollgate_deliver(self, message: OutboundMessage) -> DeliveryResult | None:
        if message.channel != CHANNEL or not self.url:
            return None  # not ours: the gateway asks the next plugin
        request = urllib.request.Request(
            self.url,
            data=json.dumps(_payload(message)).encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": message.idempotency_key,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                status = answer.status
                raw = answer.read()
        except urllib.error.HTTPError as exc:  # a non-2xx answer
            exc.close()
            return self._failed(message, f"webhook answered HTTP {exc.code}")
        except (OSError, ValueError) as exc:  # unreachable, timeout, bad URL
            return self._failed(message, f"webhook unreachable: {type(exc).__name__}")
        if not 200 <= status < 300:
            return self._failed(message, f"webhook answered HTTP {status}")
        return DeliveryResult(provider_message_id=_provider_id(raw, message))

    @staticmethod
    def _failed(message: OutboundMessage, error: str) -> DeliveryResult:
        # log the pseudonymous contact id and audit seq, never message.to
        log.warning(
            "webhook delivery failed for contact %s (audit_seq %d): %s",
            message.contact_id,
            message.audit_seq,
            error,
        )
        return DeliveryResult(error=error)


def _payload(message: OutboundMessage) -> dict[str, object]:
    return {
        "contact_id": message.contact_id,
        "body": message.body,
        "campaign": message.campaign,
        "purpose": message.purpose,
        "idempotency_key": message.idempotency_key,
        "audit_seq": message.audit_seq,
        "to": message.to,
    }


def _provider_id(raw: bytes, message: OutboundMessage) -> str:
    """The answer's JSON "id", or a fallback derived from the audit record."""
    try:
        answer = json.loads(raw) if raw.strip() else None
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        found = answer.get("id")
        if isinstance(found, str | int) and not isinstance(found, bool) and found != "":
            return str(found)
    return f"webhook-{message.audit_seq}"


plugin = WebhookPlugin()
