"""The README's main job, end to end: `tollgate demo` on the real data set.

The figures that do not depend on the clock are checked against the data set
itself: every customer who subscribed (y = yes) is suppressed as converted,
every one in default is on the do-not-contact list, and so on.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import audit
from gateway.demo import default_csv

AT = "2026-12-08T01:30:00Z"


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
