"""Frequency caps counted atomically with the decision, under concurrency."""

from __future__ import annotations

import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import audit
from gateway.service import Gateway, SendInput
from gateway.store import ContactRef
from support import AT, GatewayFactory, add_contact

CASES = json.loads((Path(__file__).parent / "data" / "field-cases.json").read_text())


def _send(gateway: Gateway, ref: ContactRef, key: str, campaign: str = "c") -> str:
    response = gateway.send(
        SendInput(
            contact=ref,
            channel="sms",
            purpose="marketing",
            campaign=campaign,
            body="hello",
            idempotency_key=key,
            at=AT,
        )
    )
    return str(response["decision"]["outcome"])


def _sends(gateway: Gateway) -> int:
    return gateway.store.counts()["sends"]


def test_concurrent_sends_to_one_contact_never_exceed_the_cap(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    gateway = make_gateway(store_url)
    ref = add_contact(gateway)
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda i: _send(gateway, ref, f"k{i}"), range(24)))
    # a new lead: its tier allows 2 marketing messages a day (tiers.yaml)
    assert outcomes.count("ALLOW") == 2
    assert outcomes.count("DEFER") == 22
    assert _sends(gateway) == 2
    # 1 consent, 24 decisions, 2 deliveries
    assert audit.verify_chain(gateway.store.audit_records()).count == 27


def test_two_gateways_sharing_one_database_never_exceed_the_cap(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    first, second = make_gateway(store_url), make_gateway(store_url)
    ref = add_contact(first)
    jobs = [(first if i % 2 else second, f"k{i}") for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda job: _send(job[0], ref, job[1]), jobs))
    assert outcomes.count("ALLOW") == 2  # the new-lead tier's cap
    assert _sends(first) == 2
    audit.verify_chain(first.store.audit_records())


def test_FC_06_read_then_write_limiter_lets_concurrent_requests_bypass_the_limit(
    make_gateway: GatewayFactory, store_url: str, tmp_path: Path
) -> None:
    case = next(c for c in CASES if c["id"] == "FC-06")
    rule = case["input"]["rule"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "cap.yaml").write_text(
        textwrap.dedent(
            f"""
            id: one-per-day
            description: At most {rule["max"]} message per rolling 24 hours.
            citation: field case FC-06
            match: 'message.purpose == "marketing"'
            caps:
              - id: one-per-day.cap
                max: {rule["max"]}
                window: 24h
                purposes: [marketing]
                message: One message a day.
            """
        )
    )
    gateway = make_gateway(store_url, policies=bundle)
    ref = add_contact(gateway, consent=False)
    requests = case["input"]["concurrent_requests"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(
            pool.map(
                lambda r: _send(gateway, ref, f"key-{r['campaign']}", r["campaign"]),
                requests,
            )
        )
    expected = case["expected"]
    assert outcomes.count("ALLOW") == expected["allowed"]
    assert outcomes.count("DEFER") == expected["blocked"]
    assert _sends(gateway) == expected["counter_after"]
    decisions = [r for r in gateway.store.audit_records() if r.kind == "decision"]
    assert len(decisions) == expected["audit_entries"]


def test_concurrent_retries_of_one_key_send_exactly_once(
    make_gateway: GatewayFactory, store_url: str, tmp_path: Path
) -> None:
    gateway = make_gateway(store_url)
    ref = add_contact(gateway)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda _: _send(gateway, ref, "same"), range(8)))
    assert set(outcomes) == {"ALLOW"}
    assert _sends(gateway) == 1
    outbox = (tmp_path / "outbox.jsonl").read_text()
    assert len(outbox.splitlines()) == 1
