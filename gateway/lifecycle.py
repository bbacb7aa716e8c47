"""Lifecycle stages of a contact and how events move them.

Stages, in order: new → engaged → in_pipeline → converted. An event moves a
contact forward, never back, except the events that explicitly close a sales
opportunity without a sale, which return an in-pipeline contact to engaged.
"""

from __future__ import annotations

STAGES = ("new", "engaged", "in_pipeline", "converted")

_FORWARD = {
    "site_visit": "engaged",
    "click": "engaged",
    "reply": "engaged",
    "form_submitted": "engaged",
    "meeting_booked": "in_pipeline",
    "opportunity_opened": "in_pipeline",
    "support_case_opened": "in_pipeline",
    "converted": "converted",
    "purchase": "converted",
}
_CLOSE_LOST = {"opportunity_lost", "support_case_closed"}


def stage_after(stage: str, event_kind: str) -> str:
    """The stage of a contact in `stage` after an event of `event_kind`."""
    if event_kind in _CLOSE_LOST and stage == "in_pipeline":
        return "engaged"
    target = _FORWARD.get(event_kind)
    if target is None or STAGES.index(target) <= STAGES.index(stage):
        return stage
    return target
