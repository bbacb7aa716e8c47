"""Cost of one policy decision on the default bundle, per CEL runtime.

Compile once, evaluate many: the bundle is loaded once per runtime, then the
same mix of inputs (an allowed message, a quiet-hours deferral in Florida, a
consent denial, a capped contact) is decided repeatedly. Prints microseconds
per decision and decisions per second for cel-python's interpreter and its
compiled (transpiled) runner.

    .venv/bin/python benchmarks/bench_policy.py [--decisions 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from gateway.app import default_policies
from gateway.policy import RUNTIMES, DecisionInput, SendRecord, evaluate, load_bundle

NOW = datetime(2026, 12, 8, 1, 30, tzinfo=UTC)  # 20:30 in New York


def _inputs() -> list[DecisionInput]:
    base = {
        "id": "ct_bench",
        "stage": "engaged",
        "tier": "",
        "tier_roles": {},
        "tier_caps": {},
        "do_not_contact": False,
        "sms_capable": True,
        "attributes": {"age": 40},
        "time_zones": ["America/New_York"],
        "time_zone_source": "phone",
        "regions": ["US-NY"],
        "consent": {"sms:marketing": "granted"},
    }
    message = {"channel": "sms", "purpose": "marketing", "campaign": "bench",
               "consent": "granted", "consent_basis": "express_written",
               "consent_entry": 1, "opt_out_confirmation_due": False,
               "address_kind": "phone", "body_length": 120}  # fmt: skip
    sends = [
        SendRecord(NOW - timedelta(hours=h), "voice", "marketing") for h in (2, 7, 12)
    ]
    return [
        DecisionInput(NOW, base, message),
        DecisionInput(NOW, {**base, "regions": ["US-FL"]}, message),
        DecisionInput(NOW, {**base, "consent": {}}, {**message, "consent": "none"}),
        DecisionInput(NOW, base, message, sends=sends),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    inputs = _inputs()
    checked = load_bundle(default_policies())
    errors = [
        r.rule_id
        for g in inputs
        for r in evaluate(checked, g).reasons
        if r.effect == "error"
    ]
    if errors:  # the inputs no longer match the declared context
        raise SystemExit(f"benchmark inputs make rules fail: {', '.join(errors)}")
    print(f"default bundle, {args.decisions} decisions per runtime, 4 inputs in turn")
    for name in RUNTIMES:
        started = time.perf_counter()
        bundle = load_bundle(default_policies(), name)
        load_ms = (time.perf_counter() - started) * 1000
        samples = []
        for i in range(args.decisions):
            started = time.perf_counter()
            evaluate(bundle, inputs[i % len(inputs)])
            samples.append(time.perf_counter() - started)
        mean = statistics.fmean(samples) * 1e6
        p95 = sorted(samples)[int(len(samples) * 0.95)] * 1e6
        print(
            f"{name:<12} load {load_ms:7.1f} ms   per decision: mean {mean:7.0f} us, "
            f"p95 {p95:7.0f} us   ({1e6 / mean:6.0f} decisions/s on one core)"
        )


if __name__ == "__main__":
    main()
