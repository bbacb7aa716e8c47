"""The policy engine: a bundle of declarative CEL policies, and its decisions.

The engine is pure: a `DecisionInput` in, a `Decision` out. Loading a bundle
(`load_bundle`) validates every file and refuses the bundle whole on the first
error, naming the file, the rule and the reason.
"""

from gateway.policy._bundle import Bundle, Cap, Policy, Rule, load_bundle
from gateway.policy._engine import (
    Decision,
    DecisionInput,
    Reason,
    evaluate,
)

__all__ = [
    "Bundle",
    "Cap",
    "Decision",
    "DecisionInput",
    "Policy",
    "Reason",
    "Rule",
    "evaluate",
    "load_bundle",
]
