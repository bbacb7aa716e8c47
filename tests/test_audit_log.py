"""The gateway's audit log: tamper detection through the CLI, and no PII."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from gateway.cli import main
from gateway.service import Gateway, SendInput
from support import AT, NY_PHONE, GatewayFactory, add_contact


def _campaign(gateway: Gateway, n: int = 3) -> None:
    for i in range(n):
        ref = add_contact(
            gateway, f"c{i}", phone=f"+1212555{100 + i:04d}", email=f"p{i}@example.com"
        )
        gateway.send(
            SendInput(
                contact=ref,
                channel="sms",
                purpose="marketing",
                campaign="spring",
                body="hello",
                idempotency_key=f"k{i}",
                at=AT,
            )
        )


def _verify(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify", "--db", url])
    return result.exit_code, result.output


@pytest.fixture
def audited(make_gateway: GatewayFactory, store_url: str) -> tuple[Gateway, str]:
    gateway = make_gateway(store_url)
    _campaign(gateway)
    return gateway, store_url


def _exec(gateway: Gateway, sql: str) -> None:
    with gateway.store.engine.begin() as conn:
        conn.execute(sa.text(sql))


def test_untouched_chain_verifies(audited: tuple[Gateway, str]) -> None:
    code, output = _verify(audited[1])
    assert code == 0, output
    assert output.startswith("OK: 9 records")  # 3 x (consent, decision, delivery)


@pytest.mark.parametrize(
    ("sql", "seq", "why"),
    [
        pytest.param(
            "UPDATE audit_records SET body = replace(body, 'ALLOW', 'DENY') "
            "WHERE seq = 2",
            2,
            "does not match",
            id="edit-body",
        ),
        pytest.param(
            "UPDATE audit_records SET kind = 'event' WHERE seq = 4",
            4,
            "",
            id="edit-kind",
        ),
        pytest.param("DELETE FROM audit_records WHERE seq = 5", 6, "", id="delete"),
        pytest.param(
            "UPDATE audit_records SET seq = CASE seq WHEN 5 THEN 6 WHEN 6 THEN 5 END "
            "WHERE seq IN (5, 6)",
            5,
            "",
            id="reorder",
        ),
    ],
)
def test_tampering_is_detected_at_the_first_bad_record(
    audited: tuple[Gateway, str], sql: str, seq: int, why: str
) -> None:
    gateway, url = audited
    if "CASE" in sql:  # swap in two steps: primary keys must stay unique
        _exec(gateway, "UPDATE audit_records SET seq = 1000 WHERE seq = 5")
        _exec(gateway, "UPDATE audit_records SET seq = 5 WHERE seq = 6")
        _exec(gateway, "UPDATE audit_records SET seq = 6 WHERE seq = 1000")
    else:
        _exec(gateway, sql)
    code, output = _verify(url)
    assert code == 1
    assert output.startswith(f"FAIL: audit record {seq}")
    assert why in output


def test_no_phone_or_email_in_audit_records_or_log_lines(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = make_gateway()
    _campaign(gateway)
    stored = "\n".join(str(r.to_dict()) for r in gateway.store.audit_records())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (stored, logged):
        assert "+1212555" not in text and "@example.com" not in text
        assert "ct_" in text  # the pseudonymous id is what appears instead
    assert NY_PHONE not in logged


def test_exported_log_verifies_with_the_audit_package_alone(
    audited: tuple[Gateway, str], tmp_path: Path
) -> None:
    out = tmp_path / "export.jsonl"
    result = CliRunner().invoke(main, ["audit", "export", "--db", audited[1], str(out)])
    assert result.exit_code == 0, result.output
    checked = subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: 9 records")
