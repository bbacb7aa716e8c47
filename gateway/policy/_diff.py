"""Comparing two bundles rule by rule and tier by tier: what was added,
removed or changed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.policy._bundle import Bundle, Cap, Expr, Policy, Rule
from gateway.policy._tiers import Tier


@dataclass
class BundleDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> Iterator[str]:
        for item in self.added:
            yield f"+ {item}"
        for item in self.removed:
            yield f"- {item}"
        for item, what in self.changed.items():
            yield f"~ {item}: {', '.join(what)} changed"
        if self.empty:
            yield "no differences in policies, rules, caps, tiers or data"


def diff_bundles(old: Bundle, new: Bundle) -> BundleDiff:
    """Policies, rules, caps and tiers added, removed and changed from old to
    new; tiers also when only their order changed (the first match wins)."""
    before, after = _items(old), _items(new)
    result = BundleDiff(
        added=[k for k in after if k not in before],
        removed=[k for k in before if k not in after],
    )
    for key in before.keys() & after.keys():
        changes = _changes(before[key], after[key])
        if changes:
            result.changed[key] = changes
    old_order = [t.id for t in old.tiers if t.id in {u.id for u in new.tiers}]
    new_order = [t.id for t in new.tiers if t.id in {u.id for u in old.tiers}]
    if old_order != new_order:
        result.changed["tiers"] = ["order"]
    result.changed = dict(sorted(result.changed.items()))
    if old.data != new.data:
        names = sorted(k for k in old.data.keys() | new.data.keys()
                       if old.data.get(k) != new.data.get(k))  # fmt: skip
        result.changed.update({f"data {n}": ["entries"] for n in names})
    return result


def _items(bundle: Bundle) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for policy in bundle.policies:
        out[f"policy {policy.id}"] = policy
        out.update({f"rule {r.id}": r for r in policy.rules})
        out.update({f"cap {c.id}": c for c in policy.caps})
    out.update({f"tier {t.id}": t for t in bundle.tiers})
    return out


def _changes(
    old: Policy | Rule | Cap | Tier, new: Policy | Rule | Cap | Tier
) -> list[str]:
    # a policy's rules and caps are compared as items of their own
    skip = {"rules", "caps", "file"} if isinstance(old, Policy) else set()
    return [
        f.name
        for f in fields(old)
        if f.name not in skip
        and _comparable(getattr(old, f.name)) != _comparable(getattr(new, f.name))
    ]


def _comparable(value: Any) -> Any:
    if isinstance(value, Expr):
        return value.source
    if isinstance(value, tuple):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _comparable(v) for k, v in value.items()}
    return value
