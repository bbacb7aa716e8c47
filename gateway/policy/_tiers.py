"""Shared audience tiers: `tiers.yaml` in the policy bundle.

A tier is a CEL condition over the contact with one objective; it names the
ad audience per platform and the SMS segment of its members, the channel
roles (which purposes each channel may carry for the tier) and its caps. A
contact belongs to the first tier whose condition is true, in file order, or
to none. The gateway computes the tier for every decision, so policies see
``contact.tier``, ``contact.tier_roles`` and ``contact.tier_caps``, and the
decision's audit record holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import PolicyError
from gateway.policy import _typecheck
from gateway.policy._context import PURPOSES

TIER_KEYS = {
    "id", "name", "objective", "when", "ad_audiences", "sms_segment",
    "channel_roles", "caps",
}  # fmt: skip
TIERS_FILE = "tiers.yaml"
MAX_CAP = 1_000_000  # any cap above this is a typing error, not a policy


@dataclass(frozen=True)
class Tier:
    id: str
    name: str
    objective: str
    when: Any  # a compiled Expr (see _bundle.Expr)
    ad_audiences: Mapping[str, str] = field(default_factory=dict)
    sms_segment: str = ""
    channel_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    caps: Mapping[str, int] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        """What policies see of the tier (``contact.tier_*``)."""
        return {
            "tier": self.id,
            "tier_roles": {k: list(v) for k, v in self.channel_roles.items()},
            "tier_caps": dict(self.caps),
        }


NO_TIER: dict[str, Any] = {"tier": "", "tier_roles": {}, "tier_caps": {}}


def read_tiers(reader: Any, doc: Any) -> tuple[Tier, ...]:
    """Read `tiers.yaml` with the policy reader (`_bundle._Reader`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tiers"), list):
        raise PolicyError(f"{TIERS_FILE}: expected a mapping with a list of 'tiers'")
    tiers = [_tier(reader, raw, i) for i, raw in enumerate(doc["tiers"], 1)]
    ids = [t.id for t in tiers]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PolicyError(
            f"{TIERS_FILE}: tier id(s) {', '.join(duplicates)} used twice"
        )
    return tuple(tiers)


def _tier(reader: Any, raw: Any, index: int) -> Tier:
    where = f"tier #{index}"
    if not isinstance(raw, dict):
        raise reader.fail(where, "expected a mapping")
    reader.keys(raw, TIER_KEYS, {"id", "name", "objective", "when"}, where)
    tid = reader.ident(raw, where)
    where = f"tier {tid!r}"
    return Tier(
        id=tid,
        name=reader.text(raw, "name", where),
        objective=reader.text(raw, "objective", where),
        when=reader.expr(raw, "when", where, _typecheck.BOOL),
        ad_audiences=_names(reader, raw, "ad_audiences", where),
        sms_segment=str(raw.get("sms_segment") or ""),
        channel_roles=_roles(reader, raw, where),
        caps=_caps(reader, raw, where),
    )


def _names(reader: Any, raw: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = raw.get(key) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise reader.fail(where, f"{key} must map each platform to an audience name")
    return {str(k): str(v) for k, v in value.items()}


def _roles(
    reader: Any, raw: Mapping[str, Any], where: str
) -> dict[str, tuple[str, ...]]:
    value = raw.get("channel_roles") or {}
    if not isinstance(value, dict):
        raise reader.fail(where, "channel_roles must map each channel to purposes")
    roles = {}
    for channel, purposes in value.items():
        if not isinstance(purposes, list) or not set(purposes) <= set(PURPOSES):
            raise reader.fail(
                where,
                f"channel_roles.{channel} must list purposes among "
                f"{', '.join(PURPOSES)}, found {purposes!r}",
            )
        roles[str(channel)] = tuple(str(p) for p in purposes)
    return roles


def _caps(reader: Any, raw: Mapping[str, Any], where: str) -> dict[str, int]:
    value = raw.get("caps") or {}
    if not isinstance(value, dict):
        raise reader.fail(where, "caps must map names to whole numbers")
    for name, limit in value.items():
        if isinstance(limit, bool) or not isinstance(limit, int):
            limit = None
        if limit is None or not 1 <= limit <= MAX_CAP:
            raise reader.fail(
                where,
                f"cap {name!r} must be a whole number from 1 to {MAX_CAP}, "
                f"found {value[name]!r}",
                value[name],
            )
    return {str(k): int(v) for k, v in value.items()}
