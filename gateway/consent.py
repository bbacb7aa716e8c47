"""One consent truth for every channel: the ledger and what it says now.

The ledger is append-only: every grant, revocation, double opt-in and
opt-out is a new entry, never an edit. What a contact consents to *now*, for
one channel and purpose, is derived: the latest entry that covers them (an
entry for channel ``*`` or purpose ``*`` covers every channel or purpose; an
opt-out keyword writes ``*``/``*`` so it takes effect everywhere at once),
read as:

- ``revoked``: the entry withdraws consent;
- ``pending``: a double opt-in the contact has not confirmed yet;
- ``expired``: consent implied by a purchase or an inquiry whose period has
  passed (by default 18 months after a purchase, 3 months after an inquiry,
  the established-business-relationship periods of 16 CFR 310.2(q));
- ``granted`` otherwise; ``none`` when no entry covers them.

The deciding entry is kept with the status, as the evidence behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

ALL = "*"
LEGAL_BASES = ("express_written", "express", "implied_purchase", "implied_inquiry")
DEFAULT_EXPIRY: Mapping[str, timedelta] = {
    "implied_purchase": timedelta(days=548),  # 18 months
    "implied_inquiry": timedelta(days=91),  # 3 months
}


@dataclass(frozen=True)
class ConsentEntry:
    id: int
    channel: str
    purpose: str
    granted: bool
    source: str
    recorded_at: datetime
    legal_basis: str = "express"
    expires_at: datetime | None = None
    disclosure_sha256: str | None = None
    pending: bool = False
    provider_confirmed: bool = False

    def covers(self, channel: str, purpose: str) -> bool:
        return self.channel in (channel, ALL) and self.purpose in (purpose, ALL)

    def evidence(self) -> dict[str, object]:
        """The entry as PII-free plain data, for answers and audit records."""
        return {
            "entry_id": self.id,
            "channel": self.channel,
            "purpose": self.purpose,
            "granted": self.granted,
            "source": self.source,
            "recorded_at": self.recorded_at.isoformat(),
            "legal_basis": self.legal_basis,
            "expires_at": self.expires_at.isoformat() if self.expires_at else "",
            "disclosure_sha256": self.disclosure_sha256 or "",
            "pending": self.pending,
        }


@dataclass(frozen=True)
class ConsentState:
    status: str  # granted, revoked, pending, expired or none
    entry: ConsentEntry | None = None

    @property
    def basis(self) -> str:
        return self.entry.legal_basis if self.entry and self.status == "granted" else ""


def effective(
    entries: Sequence[ConsentEntry], channel: str, purpose: str, now: datetime
) -> ConsentState:
    """What the ledger says now for one channel and purpose (see module doc)."""
    covering = [e for e in entries if e.covers(channel, purpose)]
    if not covering:
        return ConsentState("none")
    latest = max(covering, key=lambda e: (e.recorded_at, e.id))
    if not latest.granted:
        return ConsentState("revoked", latest)
    if latest.pending:
        return ConsentState("pending", latest)
    if latest.expires_at is not None and now >= latest.expires_at:
        return ConsentState("expired", latest)
    return ConsentState("granted", latest)


def statuses(entries: Sequence[ConsentEntry], now: datetime) -> dict[str, str]:
    """``"channel:purpose" -> status`` for every pair the ledger names."""
    pairs = {
        (e.channel, e.purpose) for e in entries if ALL not in (e.channel, e.purpose)
    }
    return {f"{c}:{p}": effective(entries, c, p, now).status for c, p in sorted(pairs)}


def confirmation_due(
    entries: Iterable[ConsentEntry], channel: str, confirmed_at: datetime | None
) -> bool:
    """True when an opt-out covering `channel` awaits its one confirmation.

    The opt-out is the first revocation since the last grant on the channel:
    repeating STOP does not start a new one. It is due when the provider did
    not confirm it and no confirmation was sent on the channel since it
    (field case CO-03).
    """
    covering = sorted(
        (e for e in entries if e.channel in (channel, ALL)),
        key=lambda e: (e.recorded_at, e.id),
    )
    grants = [i for i, e in enumerate(covering) if e.granted]
    since = covering[grants[-1] + 1 :] if grants else covering
    if not since or any(e.provider_confirmed for e in since):
        return False
    return confirmed_at is None or confirmed_at < since[0].recorded_at


def default_expiry(legal_basis: str, granted_at: datetime) -> datetime | None:
    period = DEFAULT_EXPIRY.get(legal_basis)
    return granted_at + period if period else None
