# mypy: disable-error-code="empty-body"
"""The hook specification for channel plugins: the only API plugins see.

A channel plugin is a pluggy plugin registered under the entry-point group
``tollgate``. It names the channels it serves and delivers the messages the
gateway has already allowed, audited and counted. Plugins never reach into the
store or the policy engine; they get the plain data types defined here.
Built-in channels (``plugins/``) use exactly these hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pluggy

PROJECT_NAME = "tollgate"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "AudienceChange",
    "AudienceMember",
    "AudienceSyncResult",
    "DeliveryReport",
    "DeliveryResult",
    "InboundReply",
    "OutboundMessage",
    "hookimpl",
    "hookspec",
    "tollgate_audience_platforms",
    "tollgate_channels",
    "tollgate_configure",
    "tollgate_deliver",
    "tollgate_parse_callback",
    "tollgate_sync_audience",
]


@dataclass(frozen=True)
class OutboundMessage:
    """A message the gateway has decided to send.

    `to` is the recipient's address of the kind the channel declared (an E.164
    phone number or an e-mail address); it is the only personal datum a plugin
    receives and must not be logged; `contact_id` is the pseudonymous id to log
    instead.
    """

    channel: str
    to: str
    body: str
    contact_id: str
    campaign: str
    purpose: str
    idempotency_key: str
    audit_seq: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """What a plugin reports for one message.

    Exactly one of `provider_message_id` (the message left the gateway) and
    `error` (it did not; a short reason without personal data) is set.
    """

    provider_message_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class InboundReply:
    """A reply from a contact that a provider called back with (an MO)."""

    sender: str  # the contact's address; personal data, never to be logged
    text: str
    provider_message_id: str = ""
    received_at: str = ""  # ISO 8601 when the provider says; empty: now


@dataclass(frozen=True)
class DeliveryReport:
    """A provider's report on a message it was handed (a DLR).

    `audit_seq` is the decision's audit sequence number, which the plugin put
    into the callback address when it forwarded the message; `status` is
    "delivered", "failed", "accepted" (by the provider's network) or
    "buffered"; `detail` is the provider's own code, without personal data.
    """

    audit_seq: int
    status: str
    detail: str = ""


@hookspec
def tollgate_configure(settings: Mapping[str, str]) -> None:
    """Receive the gateway's settings once, before any other hook is called.

    :param settings: string settings, e.g. ``data_dir`` (a writable folder the
        gateway owns) and any ``TOLLGATE_PLUGIN_*`` values from the environment.
    """


@hookspec
def tollgate_channels() -> Mapping[str, str]:
    """Name the channels this plugin delivers to and the address each needs.

    :return: channel name → address kind, e.g. ``{"sms": "phone"}``. The kinds
        are ``"phone"`` (E.164) and ``"email"``. A channel may be served by one
        plugin only; the gateway refuses to start when two claim it.
    """


@hookspec(firstresult=True)
def tollgate_deliver(message: OutboundMessage) -> DeliveryResult | None:
    """Deliver one allowed message.

    :param message: the message, whose `channel` is one this plugin named.
    :return: a `DeliveryResult`, or None when the channel is not this plugin's
        (the gateway then asks the next plugin). Raising an exception counts as
        a failed delivery; the gateway records it and never retries by itself.
    """


@hookspec(firstresult=True)
def tollgate_parse_callback(
    channel: str, kind: str, query: Mapping[str, str]
) -> InboundReply | DeliveryReport | None:
    """Turn a provider's HTTP callback into a reply or a delivery report.

    The gateway serves ``/callbacks/<channel>/<kind>`` on loopback (the URL
    prefix is ``settings["callback_url"]``) and calls this hook for each
    request. Plugins only translate; the gateway records and acts.

    :param channel: the channel in the path; answer only for your own.
    :param kind: the last path segment, e.g. ``"mo"`` or ``"dlr"``.
    :param query: the request's query parameters (first value of each).
    :return: an `InboundReply`, a `DeliveryReport`, or None when the channel is
        not yours. Raise ``ValueError`` for a malformed callback.
    """


@dataclass(frozen=True)
class AudienceMember:
    """One contact to add to or remove from an ad audience.

    `email` and `phone_e164` are personal data, given only so the plugin can
    normalise and hash them exactly as its platform requires; they must never
    be logged or sent unhashed. `contact_id` is the pseudonymous id to report
    failures against.
    """

    contact_id: str
    email: str | None = None
    phone_e164: str | None = None


@dataclass(frozen=True)
class AudienceChange:
    """The difference to apply to one platform audience."""

    platform: str
    audience_id: str
    add: Sequence[AudienceMember] = ()
    remove: Sequence[AudienceMember] = ()
    sync_id: str = ""  # stable for a retry of the same sync


@dataclass(frozen=True)
class AudienceSyncResult:
    """What the platform accepted.

    `failed` maps a contact_id to a short reason without personal data; an
    `error` means the whole change was refused (nothing applied).
    """

    added: int = 0
    removed: int = 0
    failed: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


@hookspec
def tollgate_audience_platforms() -> Sequence[str]:
    """Name the ad platforms this plugin syncs audiences to, e.g. ``"meta"``."""


@hookspec(firstresult=True)
def tollgate_sync_audience(change: AudienceChange) -> AudienceSyncResult | None:
    """Apply one audience change on the plugin's platform.

    :param change: members to add and to remove, decided by the policies.
    :return: an `AudienceSyncResult`, or None when the platform is not this
        plugin's. Batching, rate limits and retries within the platform's rules
        are the plugin's job; raising counts as the whole change failing.
    """
