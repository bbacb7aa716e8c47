"""The policy engine: a bundle of declarative CEL policies, and its decisions.

The engine is pure: a `DecisionInput` in, a `Decision` out. Loading a bundle
(`load_bundle`) validates and type-checks every file and refuses the bundle
whole on the first error, naming the file, line, column, rule and reason.
"""

from gateway.policy._bundle import Bundle, Cap, Policy, Rule, load_bundle
from gateway.policy._cases import Case, load_cases, read_input
from gateway.policy._diff import BundleDiff, diff_bundles
from gateway.policy._engine import (
    Decision,
    DecisionInput,
    PolicyTrace,
    Reason,
    RuleTrace,
    SendRecord,
    TierError,
    evaluate,
    place_in_tier,
    tier_of,
    with_tier,
)
from gateway.policy._explain import explain_lines
from gateway.policy._replay import ReplayReport, replay
from gateway.policy._runtime import RUNTIMES
from gateway.policy._testing import TestReport, run_tests
from gateway.policy._tiers import Tier

__all__ = [
    "RUNTIMES",
    "Bundle",
    "BundleDiff",
    "Cap",
    "Case",
    "Decision",
    "DecisionInput",
    "Policy",
    "PolicyTrace",
    "Reason",
    "ReplayReport",
    "Rule",
    "RuleTrace",
    "SendRecord",
    "TestReport",
    "Tier",
    "TierError",
    "diff_bundles",
    "evaluate",
    "explain_lines",
    "load_bundle",
    "load_cases",
    "place_in_tier",
    "read_input",
    "replay",
    "run_tests",
    "tier_of",
    "with_tier",
]
