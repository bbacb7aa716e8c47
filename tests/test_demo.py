"""The README's main job, end to end: `tollgate demo` on the real data set.

The figures that do not depend on the clock are checked against the data set
itself: every customer who subscribed (y = yes) is suppressed as converted,
every one in default is on the do-not-contact list, and so on. What the ad
platforms hold is read from the local stand-ins' own state and compared with
what the gateway reported and stored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

import audit
from gateway import demo
from gateway.demo import default_csv, load_customers
from gateway.store import ContactRef, Store

AT = "2026-12-08T01:30:00Z"
PLATFORMS = ("meta", "google")
TIER_AUDIENCES = {
    "customer-expansion": "tg-customer-expansion",
    "new-high-intent": "tg-new-high-intent",
    "engaged-non-converter": "tg-engaged-retargeting",
}


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, object], Path, str]:
    data_dir = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--at",
            AT,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((data_dir / "summary.json").read_text())
    return summary, data_dir, done.stdout


def _rows() -> list[dict[str, str]]:
    with default_csv().open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def test_every_customer_gets_exactly_one_decision(demo_run: tuple) -> None:
    summary, _, output = demo_run
    rows = _rows()
    assert len(rows) == 4521
    assert summary["customers"] == len(rows)
    assert sum(summary["outcomes"].values()) == len(rows)
    assert summary["errors"] == []
    assert "Audit chain: verified" in output


def test_figures_that_follow_from_the_data_set(demo_run: tuple) -> None:
    summary, _, _ = demo_run
    rows = _rows()
    denied = summary["rules"]["DENY"]
    assert denied["suppression.converted"] == sum(r["y"] == "yes" for r in rows)
    contact = Counter(r["contact"] for r in rows)
    assert denied["gateway.no-address"] == contact["unknown"]
    assert denied["channel.sms-to-landline"] == contact["telephone"]
    defaulted = sum(r["default"] == "yes" for r in rows)
    assert 0 < denied["suppression.do-not-contact"] <= defaulted


def test_sms_went_through_a_real_kannel_and_replies_came_back(demo_run: tuple) -> None:
    summary, _, output = demo_run
    allowed = summary["outcomes"]["ALLOW"]
    assert summary["channel"].startswith("Kannel"), "run scripts/ensure-kannel"
    assert summary["forwarded"] == allowed > 0
    # the campaign, three opt-out confirmations and one answer to HELP
    assert summary["sent_via_kannel"] == allowed + 4
    assert summary["inbound"] == {"opt_out": 3, "help": 1}
    assert summary["opted_out_everywhere"] == 3
    assert summary["delivery_reports"]["delivered"] == allowed + 4
    assert "SMS went through Kannel" in output


def test_without_kannel_the_outbox_holds_exactly_the_allowed_messages(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--at", AT, "--limit", "300",
         "--outbox", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    sent = [
        json.loads(line)
        for line in (tmp_path / "outbox.jsonl").read_text().splitlines()
    ]
    assert summary["channel"].startswith("the outbox file")
    assert len(sent) == summary["outcomes"]["ALLOW"] == summary["forwarded"] > 0
    assert len({m["to"] for m in sent}) == len(sent)  # nobody messaged twice
    assert all(m["to"].startswith("+1") and m["channel"] == "sms" for m in sent)


def test_the_clock_sensitive_rules_fire(demo_run: tuple) -> None:
    summary, _, output = demo_run
    deferred = summary["rules"]["DEFER"]
    assert deferred["quiet-hours.outside-window"] > 0
    assert deferred["frequency-caps.marketing-3-per-24h"] > 0
    assert "quiet-hours.outside-window" in output


def test_the_demo_store_verifies_with_the_cli(demo_run: tuple) -> None:
    _, data_dir, _ = demo_run
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            "verify",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: ")
    assert int(done.stdout.split()[1]) > 4521
    assert audit.GENESIS_HASH not in done.stdout


def _platform_digest(platform: str, phone: str) -> str:
    """What the platform holds for an E.164 number: Meta hashes the digits
    without the plus, Google the E.164 form."""
    text = phone[1:] if platform == "meta" else phone
    return hashlib.sha256(text.encode()).hexdigest()


def _personal_data_in(text: str, phones: Iterable[str]) -> list[str]:
    """Phone numbers (any run of digits holding one), e-mail addresses and
    either platform's digest of a phone number found in `text`."""
    nationals = {p[-10:] for p in phones}
    digests = {_platform_digest(pf, p) for p in phones for pf in PLATFORMS}
    found = [
        run
        for run in re.findall(r"\d{10,}", text)
        if any(run[i : i + 10] in nationals for i in range(len(run) - 9))
    ]
    found += re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", text)
    found += sorted(digests & set(re.findall(r"[0-9a-f]{64}", text)))
    return found


def _audit_text(data_dir: Path) -> str:
    store = Store.open(f"sqlite:///{data_dir / 'tollgate.db'}", migrate=False)
    try:
        return "\n".join(json.dumps(r.body) for r in store.audit_records())
    finally:
        store.close()


def test_every_tier_reaches_both_platforms_and_conversions_leave_them(
    demo_run: tuple,
) -> None:
    summary, _, output = demo_run
    syncs = {(s["tier"], s["platform"]): s for s in summary["audiences"]}
    assert set(syncs) == {(t, p) for t in TIER_AUDIENCES for p in PLATFORMS}
    for sync in syncs.values():
        assert (sync["error"], sync["failed"], sync["removed"]) == ("", 0, 0)
        assert sync["added"] > 0
        other = syncs[sync["tier"], "google" if sync["platform"] == "meta" else "meta"]
        assert sync["added"] == other["added"]  # one consent for both platforms
    stages = summary["stages"]
    assert syncs["customer-expansion", "meta"]["considered"] == stages["converted"]
    assert syncs["new-high-intent", "meta"]["considered"] == stages["new"]
    assert syncs["engaged-non-converter", "meta"]["considered"] == stages["engaged"]

    conversions = summary["conversions"]
    everywhere = {"meta": 100, "google": 100, "both": 100}
    assert conversions["converted"] == sum(conversions["by_tier"].values()) == 100
    assert conversions["left_tier_audience"] == everywhere
    assert conversions["joined_expansion"] == everywhere
    assert conversions["event_to_request_ms"]["both"]["count"] == 100
    resync = {s["platform"]: s for s in conversions["expansion_sync"]}
    held = summary["platform_audiences"]
    for platform in PLATFORMS:
        for tier, converted in conversions["by_tier"].items():
            assert (
                held[platform][TIER_AUDIENCES[tier]]
                == syncs[tier, platform]["added"] - converted
            )
        assert (
            held[platform]["tg-customer-expansion"]
            == syncs["customer-expansion", platform]["added"]
            + resync[platform]["added"]
        )
    assert "Conversions: 100 contacts converted" in output


def test_no_phone_number_or_its_digest_in_the_output_or_the_audit_log(
    demo_run: tuple,
) -> None:
    summary, data_dir, output = demo_run
    phones = [c.phone for c in load_customers(default_csv()) if c.phone]
    assert _personal_data_in(output, phones) == []
    assert _personal_data_in(json.dumps(summary), phones) == []
    assert _personal_data_in(_audit_text(data_dir), phones) == []


def test_the_platforms_hold_exactly_the_members_the_gateway_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short run in-process, to read the stand-ins' own state afterwards
    (40 conversions, so that the 300 customers' tier audiences keep members)."""
    monkeypatch.setattr(demo, "CONVERSIONS", 40)
    platforms = demo.AdPlatforms.new()
    summary = demo.run(
        data_dir=tmp_path,
        at=datetime(2026, 12, 8, 1, 30, tzinfo=UTC),
        limit=300,
        use_kannel=False,
        ad_platforms=platforms,
    )
    store = Store.open(f"sqlite:///{tmp_path / 'tollgate.db'}", migrate=False)
    try:
        phone_of = {
            c: store.snapshot(ContactRef(contact_id=c), None).phone_e164
            for c in store.contact_ids()
        }
        members = {
            (p, a): store.audience_members(p, a)
            for p in PLATFORMS
            for a in TIER_AUDIENCES.values()
        }
        records = list(store.audit_records())
    finally:
        store.close()
    converted = [
        r.body["contact_id"]
        for r in records
        if r.kind == "event" and r.body["kind"] == "converted"
    ]

    # 1. each platform holds the digests of exactly the gateway's members: as
    #    many as SyncAudience reported added, less the converted who left
    added = Counter[tuple[str, str]]()
    for sync in summary.audiences + summary.conversions["expansion_sync"]:
        added[sync["platform"], sync["audience_id"]] += sync["added"]
    left = {
        TIER_AUDIENCES[tier]: n for tier, n in summary.conversions["by_tier"].items()
    }
    for (platform, audience), ids in members.items():
        held = platforms.of(platform).members(audience)
        assert held == {_platform_digest(platform, str(phone_of[c])) for c in ids}
        assert len(held) == added[platform, audience] - left.get(audience, 0) > 0

    # 2. the converted left the tier audiences on both platforms, and joined
    #    Customer Expansion
    assert len(converted) == summary.conversions["converted"] > 0
    for contact_id in converted:
        phone = str(phone_of[contact_id])
        for platform in PLATFORMS:
            digest = _platform_digest(platform, phone)
            local = platforms.of(platform)
            assert not local.holds("tg-new-high-intent", digest)
            assert not local.holds("tg-engaged-retargeting", digest)
            assert local.holds("tg-customer-expansion", digest)

    # 3. no personal data in the report, the summary or the audit log
    phones = [str(p) for p in phone_of.values() if p]
    text = "\n".join(json.dumps(r.body) for r in records)
    for where in (summary.report(), json.dumps(summary.to_json()), text):
        assert _personal_data_in(where, phones) == []
