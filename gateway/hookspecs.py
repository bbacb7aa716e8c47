# mypy: disable-error-code="empty-body"
"""The hook specification for channel plugins: the only API plugins see.

A channel plugin is a pluggy plugin registered under the entry-point group
``tollgate``. It names the channels it serves and delivers the messages the
gateway has already allowed, audited and counted. Plugins never reach into the
store or the policy engine; they get the plain data types defined here.
Built-in channels (``plugins/``) use exactly these hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pluggy

PROJECT_NAME = "tollgate"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "DeliveryResult",
    "OutboundMessage",
    "hookimpl",
    "hookspec",
    "tollgate_channels",
    "tollgate_configure",
    "tollgate_deliver",
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
