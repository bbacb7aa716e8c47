"""Syncing audience tiers to ad platforms, and suppressing at once.

`AudienceSync.sync` follows the path of a message for every member:

1. the candidates are the contacts of a tier (or an explicit list), read in
   batches (`Store.snapshots`), each one's tier computed once; a member of a
   list for an audience that some tier feeds must be in that tier;
2. for each one the policy bundle decides its membership as a message of
   purpose ``advertising`` on the platform's channel (address kind
   ``audience``): ad consent, suppression, do-not-contact, tier roles; a
   contact with no address is left out without a decision; every member
   decision is written to the audit log (pseudonymous ids only), all of them
   in one transaction, before anything is sent;
3. the difference against what was last synced gives the adds and removes;
4. the platform's plugin normalises, hashes and sends them in batches;
5. what the platform accepted is stored as the new membership, and the sync is
   audited with its counts;
6. every contact added whose state changed since step 1 read it (a
   conversion or an opt-out raced the sync, and its suppression found no
   membership yet) is decided again, and removed at once if refused.

Syncs of one audience are serialised within a process; the store's
membership writes are idempotent, so syncs from several processes agree.

`suppress` runs steps 2 to 5 for one contact across every audience it is in,
right after a conversion, a pipeline entry, a support case or an opt-out, so
the contact leaves the audiences of tiers it no longer belongs to at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.errors import InvalidRequestError
from gateway.hookspecs import AudienceChange, AudienceMember
from gateway.identity import check_text
from gateway.policy import DecisionInput, evaluate
from gateway.policy._engine import NO_ADDRESS_RULE
from gateway.service import ADVERTISING, Gateway, check_ref
from gateway.store import ContactRef, ContactSnapshot

log = logging.getLogger(__name__)

PURPOSE = ADVERTISING
ADDRESS_KIND = "audience"
NOT_IN_TIER_RULE = "gateway.not-in-tier"
MAX_AUDIENCE_ID = 200  # the audience_members.audience_id column

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_of(platform: str, audience: str) -> threading.Lock:
    """The lock that serialises this process's syncs of one audience."""
    with _locks_guard:
        return _locks.setdefault((platform, audience), threading.Lock())


@dataclass
class SyncReport:
    platform: str
    audience_id: str
    considered: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    excluded_by_rule: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    error: str = ""
    audit_seq: int = 0
    request_ms: float = 0.0


class AudienceSync:
    """Tier and audience operations over a running `Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def audience_of(self, tier_id: str, platform: str) -> str:
        """The audience a tier feeds on a platform (from tiers.yaml)."""
        tier = next((t for t in self.gateway.bundle.tiers if t.id == tier_id), None)
        if tier is None:
            known = ", ".join(t.id for t in self.gateway.bundle.tiers) or "none"
            raise InvalidRequestError(
                "tier", f"unknown tier {tier_id!r}; known: {known}"
            )
        audience = tier.ad_audiences.get(platform)
        if not audience:
            raise InvalidRequestError(
                "platform", f"tier {tier_id!r} has no audience on {platform!r}"
            )
        return audience

    def tier_feeding(self, platform: str, audience: str) -> str:
        """The tier whose members an audience holds ("" for none)."""
        return next(
            (
                t.id
                for t in self.gateway.bundle.tiers
                if t.ad_audiences.get(platform) == audience
            ),
            "",
        )

    def sync(
        self,
        platform: str,
        *,
        tier_id: str = "",
        audience_id: str = "",
        members: Sequence[ContactRef] = (),
        sync_id: str = "",
        at: datetime | None = None,
    ) -> SyncReport:
        """Make the platform audience hold exactly the allowed candidates."""
        refs = _unique_refs(members)
        if not tier_id and not refs:
            raise InvalidRequestError("tier", "give a tier or a member list")
        if tier_id and refs:
            raise InvalidRequestError("tier", "give a tier or a member list, not both")
        if audience_id:
            _check_audience_id(audience_id)
        check_text(sync_id, "sync_id", required=False)
        if platform not in self.gateway.channels.audience_platforms():
            raise InvalidRequestError("platform", f"no plugin syncs to {platform!r}")
        audience = audience_id or self.audience_of(tier_id, platform)
        now = at or datetime.now(UTC)
        self.retry_removals(now)
        with _lock_of(platform, audience):
            return self._sync(platform, audience, tier_id, refs, sync_id, now)

    def _sync(
        self,
        platform: str,
        audience: str,
        tier_id: str,
        refs: list[ContactRef],
        sync_id: str,
        now: datetime,
    ) -> SyncReport:
        store = self.gateway.store
        report = SyncReport(platform, audience)
        tier = tier_id or self.tier_feeding(platform, audience)
        current = store.audience_members(platform, audience)
        candidates = (
            [store.snapshot(ref, None) for ref in refs] if refs else store.snapshots()
        )
        desired: dict[str, ContactSnapshot] = {}
        held: dict[str, ContactSnapshot] = {}  # current members, to remove
        seen: set[str] = set()
        decisions = []
        for snap in candidates:
            if snap.contact_id in seen:  # one contact named twice in the list
                continue
            seen.add(snap.contact_id)
            if snap.contact_id in current:
                held[snap.contact_id] = snap
            given = self._input(snap, platform, audience, now)
            in_tier = not tier or given.contact.get("tier") == tier
            if not in_tier and not refs:
                continue
            report.considered += 1
            body = self._decide(snap, given, report, in_tier=in_tier)
            decisions.append(body)
            if body["outcome"] == "ALLOW":
                desired[snap.contact_id] = snap
        # every member decision is audited, in one transaction, before the
        # platform hears of any change
        store.append_audits("audience_decision", decisions)
        scope = seen if refs else seen | current
        remove = sorted((current & scope) - set(desired))
        add = sorted(set(desired) - current)
        report.unchanged = len(set(desired) & current)
        removed_snaps = {c: held.get(c) or self._snap(c) for c in remove}
        added = self._apply(report, add, desired, remove, removed_snaps, sync_id, now)
        self._recheck(platform, audience, tier, [desired[c] for c in added], now)
        return report

    def _recheck(
        self,
        platform: str,
        audience: str,
        tier: str,
        added: list[ContactSnapshot],
        now: datetime,
    ) -> None:
        """Step 6: decide again each contact added whose state changed since
        the sync read it, and remove at once those now refused. (Its own
        audit records; the sync's report counts what the sync added.)"""
        if not added:
            return
        read = {snap.contact_id: snap for snap in added}
        changed = [
            snap
            for snap in self.gateway.store.snapshots_of(sorted(read))
            if snap != read[snap.contact_id]
        ]
        if not changed:
            return
        log.info(
            "audience sync platform=%s audience=%s: %d added contact(s) changed "
            "during the sync; deciding them again",
            platform, audience, len(changed),
        )  # fmt: skip
        report = SyncReport(platform, audience, considered=len(changed))
        decisions, refused = [], {}
        for snap in changed:
            given = self._input(snap, platform, audience, now)
            in_tier = not tier or given.contact.get("tier") == tier
            body = self._decide(snap, given, report, in_tier=in_tier)
            decisions.append(body)
            if body["outcome"] != "ALLOW":
                refused[snap.contact_id] = snap
        self.gateway.store.append_audits("audience_decision", decisions)
        if refused:
            self._apply(report, [], {}, sorted(refused), refused, "", now)

    def suppress(
        self, contact_id: str, at: datetime | None = None, *, revocation: bool = False
    ) -> list[SyncReport]:
        """Re-decide one contact in every audience it is in; remove it at once
        from those it may no longer be in (tier left, consent gone ...).
        After a `revocation`, once every removal was accepted, the contact's
        mark (`Store.audience_removals`) is cleared."""
        now = at or datetime.now(UTC)
        reports = []
        memberships = self.gateway.store.memberships(contact_id)
        snap = self._snap(contact_id) if memberships else None
        for platform, audience in memberships:
            assert snap is not None
            report = SyncReport(platform, audience, considered=1)
            given = self._input(snap, platform, audience, now)
            tier = self.tier_feeding(platform, audience)
            in_tier = not tier or given.contact.get("tier") == tier
            body = self._decide(snap, given, report, in_tier=in_tier)
            self.gateway.store.append_audit("audience_decision", body)
            if body["outcome"] == "ALLOW":
                continue
            self._apply(report, [], {}, [contact_id], {contact_id: snap}, "", now)
            reports.append(report)
        if revocation and not any(r.error or r.failed for r in reports):
            self.gateway.store.audience_removal_done(contact_id)
        return reports

    def retry_removals(self, at: datetime | None = None) -> None:
        """Suppress again every contact whose revocation of advertising
        consent was not yet carried to its audiences (a platform refused
        or could not be reached when it was recorded)."""
        for contact_id in self.gateway.store.audience_removals():
            self.suppress(contact_id, at, revocation=True)

    def _snap(self, contact_id: str) -> ContactSnapshot:
        return self.gateway.store.snapshot(ContactRef(contact_id=contact_id), None)

    def _input(
        self, snap: ContactSnapshot, platform: str, audience: str, now: datetime
    ) -> DecisionInput:
        """The policy context of one membership; it holds the contact's tier."""
        return self.gateway.decision_input(
            self.gateway.bundle, snap, now, channel=platform, purpose=PURPOSE,
            campaign=audience, address_kind=ADDRESS_KIND,
        )  # fmt: skip

    def _decide(
        self,
        snap: ContactSnapshot,
        given: DecisionInput,
        report: SyncReport,
        *,
        in_tier: bool = True,
    ) -> dict[str, Any]:
        """Decide one membership; count what excluded it. Returns the audit
        record's body. A contact outside the tier the audience feeds, or
        with no address to match on, is refused without asking the
        policies, as a message to it would be."""
        bundle = self.gateway.bundle
        if not in_tier:
            outcome, reasons = "DENY", [NOT_IN_TIER_RULE]
        elif snap.email is None and snap.phone_e164 is None:
            outcome, reasons = "DENY", [NO_ADDRESS_RULE]
        else:
            decision = evaluate(bundle, given)
            outcome, reasons = decision.outcome, decision.rule_ids
        report.excluded_by_rule.update(reasons)
        return {
            "contact_id": snap.contact_id,
            "platform": given.message["channel"],
            "audience_id": given.message["campaign"],
            "tier": str(given.contact.get("tier", "")),
            "outcome": outcome,
            "reasons": reasons,
            "bundle_hash": bundle.hash,
        }

    def _apply(
        self,
        report: SyncReport,
        add: list[str],
        desired: dict[str, ContactSnapshot],
        remove: list[str],
        removed: dict[str, ContactSnapshot],
        sync_id: str,
        now: datetime,
    ) -> list[str]:
        """Send the change, then store and audit what was accepted; returns
        the contacts added."""
        if not add and not remove:
            report.audit_seq = self._record(report, [], [], now)
            return []
        change = AudienceChange(
            platform=report.platform,
            audience_id=report.audience_id,
            add=[_member(desired[c]) for c in add],
            remove=[_member(removed[c]) for c in remove],
            sync_id=sync_id
            or f"{report.platform}/{report.audience_id}/{now.isoformat()}",
        )
        started = time.perf_counter()
        result = self.gateway.channels.sync_audience(change)
        report.request_ms = (time.perf_counter() - started) * 1000
        report.error, report.failed = result.error, dict(result.failed)
        if result.error:
            report.audit_seq = self._record(report, [], [], now)
            return []
        added = [c for c in add if c not in result.failed]
        gone = [c for c in remove if c not in result.failed]
        report.added, report.removed = len(added), len(gone)
        report.audit_seq = self._record(report, added, gone, now)
        return added

    def _record(
        self, report: SyncReport, added: list[str], removed: list[str], now: datetime
    ) -> int:
        body = {
            "platform": report.platform,
            "audience_id": report.audience_id,
            "considered": report.considered,
            "added": sorted(added),
            "removed": sorted(removed),
            "unchanged": report.unchanged,
            "failed": dict(sorted(report.failed.items())),
            "error": report.error,
            "excluded_by_rule": dict(sorted(report.excluded_by_rule.items())),
        }
        log.info(
            "audience sync platform=%s audience=%s added=%d removed=%d failed=%d",
            report.platform, report.audience_id, len(added), len(removed),
            len(report.failed),
        )  # fmt: skip
        return self.gateway.store.apply_audience(
            report.platform, report.audience_id, added, removed, body, now
        )


def _member(snap: ContactSnapshot) -> AudienceMember:
    return AudienceMember(
        contact_id=snap.contact_id, email=snap.email, phone_e164=snap.phone_e164
    )


def _check_audience_id(audience_id: str) -> None:
    """Refuse an audience id the store cannot hold or a log should not."""
    check_text(audience_id, "audience_id", required=True, limit=MAX_AUDIENCE_ID)
    if "/" in audience_id:
        raise InvalidRequestError(
            "audience_id", "holds '/'; an audience id names one audience"
        )


def _unique_refs(members: Iterable[ContactRef]) -> list[ContactRef]:
    """The member list checked, each reference once, in order."""
    unique: dict[ContactRef, None] = {}
    for i, ref in enumerate(members):
        check_ref(ref, f"members[{i}]")
        unique.setdefault(ref)
    return list(unique)
