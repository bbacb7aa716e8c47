"""Syncing audience tiers to ad platforms, and suppressing at once.

`AudienceSync.sync` follows the path of a message for every member:

1. the candidates are the contacts of a tier (or an explicit list), read in
   batches (`Store.snapshots`), each one's tier computed once;
2. for each one the policy bundle decides its membership as a message of
   purpose ``advertising`` on the platform's channel (address kind
   ``audience``): ad consent, suppression, do-not-contact, tier roles; a
   contact with no address is left out without a decision; every member
   decision is written to the audit log (pseudonymous ids only), all of them
   in one transaction, before anything is sent;
3. the difference against what was last synced gives the adds and removes;
4. the platform's plugin normalises, hashes and sends them in batches;
5. what the platform accepted is stored as the new membership, and the sync is
   audited with its counts.

`suppress` runs steps 2 to 5 for one contact across every audience it is in,
right after a conversion, a pipeline entry, a support case or an opt-out, so
the contact leaves the audiences of tiers it no longer belongs to at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.errors import InvalidRequestError
from gateway.hookspecs import AudienceChange, AudienceMember
from gateway.policy import DecisionInput, evaluate
from gateway.service import NO_ADDRESS_RULE, Gateway
from gateway.store import ContactRef, ContactSnapshot

log = logging.getLogger(__name__)

PURPOSE = "advertising"
ADDRESS_KIND = "audience"


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
        if bool(tier_id) == bool(members):
            raise InvalidRequestError("tier", "give a tier or a member list, not both")
        if platform not in self.gateway.channels.audience_platforms():
            raise InvalidRequestError("platform", f"no plugin syncs to {platform!r}")
        audience = audience_id or self.audience_of(tier_id, platform)
        now = at or datetime.now(UTC)
        report = SyncReport(platform, audience)
        current = self.gateway.store.audience_members(platform, audience)
        candidates = (
            [self.gateway.store.snapshot(ref, None) for ref in members]
            if members
            else self.gateway.store.snapshots()
        )
        desired: dict[str, ContactSnapshot] = {}
        held: dict[str, ContactSnapshot] = {}  # current members, to remove
        seen: set[str] = set()
        decisions = []
        for snap in candidates:
            seen.add(snap.contact_id)
            if snap.contact_id in current:
                held[snap.contact_id] = snap
            given = self._input(snap, platform, audience, now)
            if tier_id and given.contact.get("tier") != tier_id:
                continue
            report.considered += 1
            body = self._decide(snap, given, report)
            decisions.append(body)
            if body["outcome"] == "ALLOW":
                desired[snap.contact_id] = snap
        # every member decision is audited, in one transaction, before the
        # platform hears of any change
        self.gateway.store.append_audits("audience_decision", decisions)
        scope = seen if members else seen | current
        remove = sorted((current & scope) - set(desired))
        add = sorted(set(desired) - current)
        report.unchanged = len(set(desired) & current)
        removed_snaps = {c: held.get(c) or self._snap(c) for c in remove}
        self._apply(report, add, desired, remove, removed_snaps, sync_id, now)
        return report

    def suppress(self, contact_id: str, at: datetime | None = None) -> list[SyncReport]:
        """Re-decide one contact in every audience it is in; remove it at once
        from those it may no longer be in (tier left, consent gone ...)."""
        now = at or datetime.now(UTC)
        reports = []
        memberships = self.gateway.store.memberships(contact_id)
        snap = self._snap(contact_id) if memberships else None
        for platform, audience in memberships:
            assert snap is not None
            report = SyncReport(platform, audience, considered=1)
            given = self._input(snap, platform, audience, now)
            tier = given.contact.get("tier", "")
            in_tier = any(
                t.id == tier and t.ad_audiences.get(platform) == audience
                for t in self.gateway.bundle.tiers
            )
            if in_tier:
                body = self._decide(snap, given, report)
                self.gateway.store.append_audit("audience_decision", body)
                if body["outcome"] == "ALLOW":
                    continue
            else:
                report.excluded_by_rule["tier changed"] += 1
            self._apply(report, [], {}, [contact_id], {contact_id: snap}, "", now)
            reports.append(report)
        return reports

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
        self, snap: ContactSnapshot, given: DecisionInput, report: SyncReport
    ) -> dict[str, Any]:
        """Decide one membership; count what excluded it. Returns the audit
        record's body. A contact with no address to match on is refused
        without asking the policies, as a message to it would be."""
        bundle = self.gateway.bundle
        if snap.email is None and snap.phone_e164 is None:
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
    ) -> None:
        if not add and not remove:
            report.audit_seq = self._record(report, [], [], now)
            return
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
            return
        added = [c for c in add if c not in result.failed]
        gone = [c for c in remove if c not in result.failed]
        report.added, report.removed = len(added), len(gone)
        report.audit_seq = self._record(report, added, gone, now)

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
