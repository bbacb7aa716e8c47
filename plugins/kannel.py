"""The ``kannel`` channel: SMS through a Kannel gateway's HTTP sendsms interface.

It is active only when configured: ``TOLLGATE_PLUGIN_KANNEL_SENDSMS_URL``
(e.g. ``http://127.0.0.1:13013/cgi-bin/sendsms``), ``..._USERNAME``,
``..._PASSWORD``, ``..._FROM`` (the sender id or short code, default
``12345``) and ``..._CHANNELS`` (default ``sms``). Without a sendsms URL it
serves no channel, so that the outbox may serve ``sms``.

Each message asks Kannel for every delivery report (``dlr-mask=31``) at
``<callback_url>/<channel>/dlr``, carrying the decision's audit sequence
number, since Kannel returns no message id; replies reach
``<callback_url>/<channel>/mo`` through the ``get-url`` of Kannel's
``sms-service``, with ``from=%p&to=%P&text=%a&body=%b&smsc=%i&ts=%t``. A
message delivered again with the same channel and idempotency key is not
sent twice while the process runs.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit

from gateway.hookspecs import (
    DeliveryReport,
    DeliveryResult,
    InboundReply,
    OutboundMessage,
    hookimpl,
)

log = logging.getLogger(__name__)

DEFAULT_SENDER = "12345"
DEFAULT_CHANNELS = "sms"
TIMEOUT = 5.0
ACCEPTED = 202  # Kannel: "0: Accepted for delivery"
# Every report Kannel can give: delivered, failed, buffered, SMSC ack, SMSC nack.
DLR_MASK = 31
DLR_STATUS = {
    1: "delivered",
    2: "failed",
    4: "buffered",
    8: "accepted",  # acknowledged by the SMSC
    16: "failed",  # rejected by the SMSC
}
# Keys remembered for de-duplicating re-deliveries; the oldest are forgotten.
REMEMBERED_KEYS = 100_000
_DIGITS = re.compile(r"\+?\d[\d ]{4,}")


class KannelPlugin:
    """Forwards allowed messages to Kannel's sendsms; reads its callbacks."""

    def __init__(self) -> None:
        self._sendsms_url = ""
        self._username = ""
        self._password = ""
        self._sender = DEFAULT_SENDER
        self._callback_url = ""
        self._channels: dict[str, str] = {}
        self._lock = threading.Lock()
        self._delivered: OrderedDict[tuple[str, str], str] = OrderedDict()

    @hookimpl
    def tollgate_configure(self, settings: Mapping[str, str]) -> None:
        self._sendsms_url = settings.get("kannel_sendsms_url", "").strip()
        self._username = settings.get("kannel_username", "")
        self._password = settings.get("kannel_password", "")
        self._sender = settings.get("kannel_from", "") or DEFAULT_SENDER
        self._callback_url = settings.get("callback_url", "").rstrip("/")
        self._channels = {}
        with self._lock:
            self._delivered.clear()
        if not self._sendsms_url:
            return
        if urlsplit(self._sendsms_url).scheme not in ("http", "https"):
            raise ValueError(
                "kannel_sendsms_url must be an http or https URL, got "
                f"{self._sendsms_url!r}"
            )
        self._channels = _channels(settings.get("kannel_channels", ""))
        if not self._callback_url:
            log.warning(
                "kannel: no callback_url, so Kannel is asked for no delivery "
                "reports and replies cannot reach the gateway"
            )

    @hookimpl
    def tollgate_channels(self) -> Mapping[str, str]:
        return dict(self._channels)

    @hookimpl
    def tollgate_deliver(self, message: OutboundMessage) -> DeliveryResult | None:
        if message.channel not in self._channels:
            return None
        key = (message.channel, message.idempotency_key)
        with self._lock:
            first = self._delivered.get(key)
        if first is not None:  # a re-delivery: answer as the first time
            return DeliveryResult(provider_message_id=first)
        # The gateway hands a key to one delivery at a time, so no lock here.
        result = self._send(message)
        if result.provider_message_id:
            self._remember(key, result.provider_message_id)
        return result

    @hookimpl
    def tollgate_parse_callback(
        self, channel: str, kind: str, query: Mapping[str, str]
    ) -> InboundReply | DeliveryReport | None:
        if channel not in self._channels:
            return None
        if kind == "mo":
            return parse_mo(query)
        if kind == "dlr":
            return parse_dlr(query)
        raise ValueError(f"unknown callback kind {kind!r}; expected 'mo' or 'dlr'")

    def request_url(self, message: OutboundMessage) -> str:
        """The sendsms URL for `message`, with the DLR callback when known.

        It holds the password and the phone number: never log it.
        """
        params = {
            "username": self._username,
            "password": self._password,
            "from": self._sender,
            "to": message.to,
            "text": message.body,
        }
        if self._callback_url:
            params["dlr-mask"] = str(DLR_MASK)
            params["dlr-url"] = dlr_url(
                self._callback_url, message.channel, message.audit_seq
            )
        separator = "&" if "?" in self._sendsms_url else "?"
        return self._sendsms_url + separator + urlencode(params, quote_via=quote)

    def _send(self, message: OutboundMessage) -> DeliveryResult:
        url = self.request_url(message)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
                status: int = answer.status
                body: bytes = answer.read(200)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(200)
            exc.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            log.warning(
                "kannel: sendsms unreachable for contact %s (audit_seq=%d): %s",
                message.contact_id,
                message.audit_seq,
                type(reason).__name__,
            )
            return DeliveryResult(
                error=f"kannel sendsms unreachable: {_describe(reason)}"
            )
        if status != ACCEPTED:
            said = _redact(body.decode("utf-8", "replace"), message.to)
            log.warning(
                "kannel: sendsms answered HTTP %d for contact %s (audit_seq=%d)",
                status,
                message.contact_id,
                message.audit_seq,
            )
            return DeliveryResult(
                error=f"kannel sendsms answered HTTP {status}, expected "
                f"{ACCEPTED}: {said!r}"
            )
        provider_id = f"kannel-{message.channel}-{message.audit_seq}"
        log.debug("kannel: accepted %s for contact %s", provider_id, message.contact_id)
        return DeliveryResult(provider_message_id=provider_id)

    def _remember(self, key: tuple[str, str], provider_id: str) -> None:
        with self._lock:
            self._delivered[key] = provider_id
            while len(self._delivered) > REMEMBERED_KEYS:
                self._delivered.popitem(last=False)


def dlr_url(callback_url: str, channel: str, audit_seq: int) -> str:
    """Where Kannel reports on one message; Kannel fills in %d and %i."""
    return (
        f"{callback_url}/{quote(channel, safe='')}/dlr?seq={audit_seq}&type=%d&smsc=%i"
    )


def parse_mo(query: Mapping[str, str]) -> InboundReply:
    """A reply from Kannel's get-url; its id is a hash of sender, time, body."""
    sender = query.get("from", "").strip()
    if not sender:
        raise ValueError(
            "MO callback: parameter 'from' (the sender, Kannel's %p) is missing"
        )
    text = query.get("body") or query.get("text", "")
    stamp = query.get("ts", "")
    digest = hashlib.sha256(f"{sender}\n{stamp}\n{text}".encode()).hexdigest()
    return InboundReply(
        sender=sender, text=text, provider_message_id=f"kannel-mo-{digest[:32]}"
    )


def parse_dlr(query: Mapping[str, str]) -> DeliveryReport:
    """A delivery report from a dlr-url made by `dlr_url`."""
    seq = _integer(query, "seq", "the decision's audit sequence number")
    if seq < 1:
        raise ValueError(f"DLR callback: parameter 'seq' must be 1 or more, got {seq}")
    kind = _integer(query, "type", "Kannel's report type, %d")
    if kind not in DLR_STATUS:
        raise ValueError(
            f"DLR callback: parameter 'type' must be one of "
            f"{', '.join(map(str, DLR_STATUS))}, got {kind}"
        )
    return DeliveryReport(
        audit_seq=seq, status=DLR_STATUS[kind], detail=f"kannel type {kind}"
    )


def _integer(query: Mapping[str, str], name: str, meaning: str) -> int:
    raw = query.get(name, "").strip()
    if not raw:
        raise ValueError(f"DLR callback: parameter {name!r} ({meaning}) is missing")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"DLR callback: parameter {name!r} ({meaning}) must be an integer, "
            f"got {raw[:20]!r}"
        ) from None


def _channels(raw: str) -> dict[str, str]:
    channels = {}
    for item in (raw or DEFAULT_CHANNELS).split(","):
        name, _, kind = item.strip().partition(":")
        if not name:
            continue
        if kind not in ("", "phone"):
            raise ValueError(
                f"kannel_channels: channel {name!r} is {kind!r}; "
                "Kannel sends to phone numbers only"
            )
        channels[name] = "phone"
    return channels


def _describe(reason: object) -> str:
    """A network failure in words, without the URL (which holds the number)."""
    if isinstance(reason, TimeoutError):
        return f"no answer within {TIMEOUT:.0f} s"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__} ({reason.strerror})"
    return type(reason).__name__


def _redact(text: str, number: str) -> str:
    """Kannel's answer, shortened, with the number and any digit run removed."""
    text = text.strip()[:120]
    if number:
        text = text.replace(number, "<number>")
    return _DIGITS.sub("<digits>", text)


plugin = KannelPlugin()
