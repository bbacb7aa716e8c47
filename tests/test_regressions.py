"""Regression tests, each named after a fault found by trying to break the gateway."""

from __future__ import annotations

import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from gateway import service as service_module
from gateway import store as store_module
from gateway.cli import main
from gateway.errors import ConsentConflictError, InvalidRequestError, KeyReusedError
from gateway.hookspecs import DeliveryReport, DeliveryResult, OutboundMessage, hookimpl
from gateway.service import ContactInput, Gateway, InboundInput, SendInput
from gateway.store import ContactRef
from support import AT, GatewayFactory, add_contact
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

Live = tuple[pb_grpc.GatewayStub, Gateway, grpc.Channel]


def _send(gateway: Gateway, ref: ContactRef, key: str = "k1", **fields: object) -> dict:
    values: dict[str, object] = {
        "contact": ref, "channel": "sms", "purpose": "marketing", "campaign": "c",
        "body": "hello", "idempotency_key": key, "at": AT,
    }  # fmt: skip
    values.update(fields)
    return gateway.send(SendInput(**values))  # type: ignore[arg-type]


def test_the_outbox_serves_no_channel_of_its_own(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway)
    with pytest.raises(InvalidRequestError, match="no plugin serves channel 'outbox'"):
        _send(gateway, ref, channel="outbox")


def test_a_phone_channel_of_any_name_keeps_consent_and_quiet_hours(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(outbox_channels="sms,whatsapp")
    ref = add_contact(gateway)  # SMS consent only
    no_consent = _send(gateway, ref, "w1", channel="whatsapp")
    gateway.record_consent(
        ref, channel="whatsapp", purpose="marketing", granted=True, source="web_form"
    )
    at_night = _send(
        gateway, ref, "w2", channel="whatsapp", at=AT + timedelta(hours=14)
    )
    assert no_consent["decision"]["outcome"] == "DENY"
    assert [r["rule_id"] for r in at_night["decision"]["reasons"]] == [
        "quiet-hours.outside-window"
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("campaign", "call 212-555-0199 now"),
        ("campaign", "(212) 555-0199"),
        ("request_id", "212.555.0199"),
        ("idempotency_key", "2125550199-x"),
        ("campaign", "mail jane@example.com"),
        ("request_id", "line\nforged log line"),
        ("campaign", "a\x00b"),
        ("request_id", "R" * 3_000_000),
    ],
    ids=[
        "dashes",
        "brackets",
        "dots",
        "bare-digits",
        "email",
        "newline",
        "nul",
        "huge",
    ],
)
def test_personal_data_control_characters_and_huge_text_are_refused(
    make_gateway: GatewayFactory, field: str, value: str
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway)
    with pytest.raises(InvalidRequestError) as caught:
        _send(gateway, ref, **{field: value})
    assert caught.value.field == field
    assert value[:30] not in str(caught.value)
    assert gateway.store.counts()["decisions"] == 0


@pytest.mark.parametrize(
    "attributes",
    [
        {"tel": "212-555-0199"},
        {"2125550199": "v"},
        {"n": {"deep": "212 555 0199"}},
        {"notes": ["+12125550199"]},
        {"notes": ["x@y.com"]},
        {"x@y.com": "k"},
    ],
    ids=["value", "key", "nested", "list-phone", "list-email", "key-email"],
)
def test_attributes_that_would_block_every_later_send_are_refused_up_front(
    make_gateway: GatewayFactory, attributes: dict
) -> None:
    gateway = make_gateway()
    with pytest.raises(InvalidRequestError, match=r"^attributes"):
        gateway.upsert_contact(ContactInput(external_id="a1", attributes=attributes))
    assert gateway.store.counts()["contacts"] == 0


def test_event_kind_and_consent_source_are_checked_for_personal_data(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway, consent=False)
    with pytest.raises(InvalidRequestError, match=r"^kind"):
        gateway.record_event(ref, kind="called 212-555-0199")
    with pytest.raises(InvalidRequestError, match=r"^source"):
        gateway.record_consent(
            ref, channel="sms", purpose="marketing", granted=True, source="2125550199"
        )


def test_one_key_for_two_contacts_in_parallel_is_refused_not_replayed(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    gateway = make_gateway(store_url)
    refs = [
        add_contact(gateway, f"q{i}", phone=f"+1212555{100 + i:04d}") for i in range(6)
    ]

    def attempt(ref: ContactRef) -> str:
        try:
            return str(_send(gateway, ref, "shared")["decision"]["contact_id"])
        except KeyReusedError:
            return "refused"

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(attempt, refs))
    winners = [a for a in answers if a != "refused"]
    assert len(winners) == 1 and answers.count("refused") == 5
    assert gateway.store.counts()["decisions"] == 1


def test_the_not_found_error_does_not_echo_the_callers_identifier(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    with pytest.raises(Exception, match="no contact with this external_id") as caught:
        _send(gateway, ContactRef(external_id="eve-0042"))
    assert "eve-0042" not in str(caught.value)


def test_an_internal_error_in_a_stream_answers_that_request_and_goes_on(
    grpc_stub: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub, gateway, _ = grpc_stub
    for name in ("s0", "s1", "s2"):
        add_contact(gateway, name, phone=f"+1212555{100 + int(name[1]):04d}")
    real = service_module.evaluate
    broken = gateway.store.snapshot(ContactRef(external_id="s1"), None).contact_id

    def flaky(bundle: object, given: object) -> object:
        if given.contact["id"] == broken:  # type: ignore[attr-defined]
            raise RuntimeError("database said: SELECT secret FROM x")
        return real(bundle, given)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "evaluate", flaky)
    stamp = pb.SendRequest().at
    stamp.FromDatetime(AT)
    requests = [
        pb.SendRequest(
            request_id=name, contact=pb.ContactRef(external_id=name), channel="sms",
            purpose=pb.PURPOSE_MARKETING, body="hi", idempotency_key=name, at=stamp,
        )
        for name in ("s0", "s1", "s2")
    ]  # fmt: skip
    answers = list(stub.SendStream(iter(requests)))
    assert [a.request_id for a in answers] == ["s0", "s1", "s2"]
    assert answers[1].error == "internal error; nothing was sent for this request"
    assert answers[0].decision.outcome == answers[2].decision.outcome == pb.ALLOW


class _DiesWhileDelivering:
    """A plugin whose first delivery never returns (the process is killed)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tollgate_channels(self) -> dict[str, str]:
        return {"pager": "phone"}

    @hookimpl
    def tollgate_deliver(self, message: OutboundMessage) -> DeliveryResult | None:
        self.calls += 1
        if self.calls == 1:
            raise KeyboardInterrupt  # stands for kill -9 in the middle
        return DeliveryResult(provider_message_id=f"pg-{message.idempotency_key}")


def test_a_retry_finishes_a_delivery_the_gateway_died_in(
    make_gateway: GatewayFactory,
) -> None:
    plugin = _DiesWhileDelivering()
    gateway = make_gateway(plugins=(plugin,))
    ref = add_contact(gateway, consent=False)
    request = {"channel": "pager", "purpose": "transactional"}
    with pytest.raises(KeyboardInterrupt):
        _send(gateway, ref, "stuck", **request)
    soon = _send(gateway, ref, "stuck", **request)
    later_clock = AT + timedelta(seconds=service_module.REDELIVER_AFTER + 1)
    gateway._clock = lambda: later_clock  # type: ignore[method-assign]
    later = _send(gateway, ref, "stuck", **request)
    again = _send(gateway, ref, "stuck", **request)
    assert soon["replayed"] and soon["delivery"]["status"] == "IN_FLIGHT"
    assert later["delivery"]["status"] == "FORWARDED"
    assert again["delivery"]["provider_message_id"] == "pg-stuck"
    assert plugin.calls == 2
    assert gateway.store.counts()["sends"] == 1  # counted once for the caps


def _audited_store(make_gateway: GatewayFactory, store_url: str) -> Gateway:
    gateway = make_gateway(store_url)
    ref = add_contact(gateway)
    _send(gateway, ref)
    return gateway


def _exec(gateway: Gateway, sql: str) -> None:
    with gateway.store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def test_audit_verify_names_a_record_whose_body_is_not_json(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    gateway = _audited_store(make_gateway, store_url)
    _exec(gateway, "UPDATE audit_records SET body = '{not json' WHERE seq = 2")
    result = CliRunner().invoke(main, ["audit", "verify", "--db", store_url])
    assert result.exit_code == 1
    assert result.output.startswith(
        "FAIL: audit record 2: its stored body is not valid JSON"
    )


def test_audit_verify_notices_the_last_record_removed(
    make_gateway: GatewayFactory, store_url: str
) -> None:
    gateway = _audited_store(make_gateway, store_url)
    _exec(gateway, "DELETE FROM audit_records WHERE seq = 3")
    result = CliRunner().invoke(main, ["audit", "verify", "--db", store_url])
    assert result.exit_code == 1
    assert "audit head is record 3" in result.output
    assert "the chain ends at record 2" in result.output


def test_audit_export_reports_an_unhashable_record_instead_of_crashing(
    make_gateway: GatewayFactory, store_url: str, tmp_path: Path
) -> None:
    gateway = _audited_store(make_gateway, store_url)
    _exec(gateway, """UPDATE audit_records SET body = '{"a":1.5}' WHERE seq = 2""")
    out = tmp_path / "export.jsonl"
    result = CliRunner().invoke(main, ["audit", "export", "--db", store_url, str(out)])
    assert result.exit_code == 1
    assert result.output.startswith("FAIL: ") and "incomplete" in result.output


def _lint(folder: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["policy", "lint", str(folder)])
    return result.exit_code, result.output


GOOD = textwrap.dedent(
    """
    id: good
    description: A good policy.
    citation: test
    match: 'true'
    rules:
      - id: good.rule
        effect: deny
        condition: contact.do_not_contact
        message: Fine.
    """
)


def test_lint_names_a_folder_named_like_a_policy_file(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "extra.yaml").mkdir()
    code, output = _lint(tmp_path)
    assert code == 2 and "extra.yaml: not a regular file" in output


def test_lint_names_a_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "zy.yaml").symlink_to(tmp_path / "missing.yaml")
    code, output = _lint(tmp_path)
    assert code == 2 and "zy.yaml: not a regular file" in output


def test_lint_names_a_complex_yaml_key(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD + "? [a, b]\n: 1\n")
    code, output = _lint(tmp_path)
    assert code == 2 and output.startswith("error: good.yaml")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("    purposes: [Marketing]", "unknown purpose(s) Marketing"),
        ("    channels: [SMS]", "channel names are lower case"),
    ],
    ids=["purpose-case", "channel-case"],
)
def test_a_cap_that_would_never_count_is_refused(
    tmp_path: Path, line: str, problem: str
) -> None:
    cap = textwrap.dedent(
        """
        id: caps
        description: A cap.
        citation: test
        match: 'true'
        caps:
          - id: caps.cap
            max: 3
            window: 24h
            message: Capped.
        """
    )
    (tmp_path / "caps.yaml").write_text(cap + line + "\n")
    code, output = _lint(tmp_path)
    assert code == 2 and problem in output


def test_a_null_citation_is_empty_not_the_word_none(tmp_path: Path) -> None:
    from gateway.policy import load_bundle

    (tmp_path / "good.yaml").write_text(
        GOOD.replace("message: Fine.", "message: Fine.\n    citation:")
    )
    bundle = load_bundle(tmp_path)
    assert bundle.policies[0].rules[0].citation == ""


def test_the_outbox_does_not_write_a_redelivery_twice(tmp_path: Path) -> None:
    """The outbox de-duplicates re-deliveries by reading its own file back."""
    from plugins.outbox import OutboxPlugin

    path = tmp_path / "outbox.jsonl"
    first = OutboxPlugin()
    first.tollgate_configure({"data_dir": str(tmp_path), "outbox_channels": "sms"})
    message = OutboundMessage(
        "sms", "+12125550100", "hi", "ct_1", "c", "marketing", "k", 2
    )
    sent = first.tollgate_deliver(message)
    path.write_text(path.read_text() + '{"torn": ')  # a crash mid-line
    second = OutboxPlugin()
    second.tollgate_configure({"data_dir": str(tmp_path), "outbox_channels": "sms"})
    again = second.tollgate_deliver(message)
    assert sent is not None and again is not None
    assert again.provider_message_id == sent.provider_message_id
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["idempotency_key"] == "k"


# --- found by the second round of breaking ------------------------------------


def test_a_stop_opts_out_every_contact_holding_the_number(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    first = add_contact(gateway, "dup1", phone="+12125550161")
    second = add_contact(gateway, "dup2", phone="(212) 555-0161")
    gateway.report_inbound(
        InboundInput(channel="sms", sender="+12125550161", text="STOP")
    )
    for ref in (first, second):
        assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "revoked"
    assert gateway.store.counts()["sends"] == 1  # one confirmation for the number


def test_a_future_dated_consent_is_refused(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    gateway.unsafe_client_clock = False
    ref = add_contact(gateway, consent=False)
    with pytest.raises(InvalidRequestError, match=r"^at: is in the future"):
        gateway.record_consent(
            ref, channel="sms", purpose="marketing", granted=True, source="web",
            at=datetime.now(UTC) + timedelta(days=365),
        )  # fmt: skip


def test_a_backdated_stop_still_revokes(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway)
    gateway.report_inbound(
        InboundInput(
            channel="sms", sender="+12125550123", text="STOP",
            received_at=datetime(2020, 1, 1, tzinfo=UTC),
        )
    )  # fmt: skip
    assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "revoked"


@pytest.mark.parametrize(
    ("channel", "purpose", "source"),
    [
        ("*", "marketing", "import"),
        ("sms", "*", "import"),
        ("*", "*", "import"),
        ("sms", "marketing", "Import"),
        ("sms", "marketing", "csv-import"),
    ],
    ids=["any-channel", "any-purpose", "everything", "capitalised", "named-import"],
)
def test_an_import_cannot_regrant_through_wildcards_or_spelling(
    make_gateway: GatewayFactory, channel: str, purpose: str, source: str
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway)
    gateway.record_consent(
        ref, channel="sms", purpose="marketing", granted=False, source="agent"
    )
    with pytest.raises(ConsentConflictError):
        gateway.record_consent(
            ref, channel=channel, purpose=purpose, granted=True, source=source
        )
    assert gateway.consent_evidence(ref, "sms", "marketing")["status"] == "revoked"


def test_a_delivery_report_for_a_denied_message_is_refused(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway()
    ref = add_contact(gateway, consent=False)
    denied = _send(gateway, ref)
    with pytest.raises(InvalidRequestError, match="not a message allowed"):
        gateway.record_delivery_report(
            "sms", DeliveryReport(denied["decision"]["audit_seq"], "delivered")
        )


def test_a_negative_content_length_is_refused_not_read(
    make_gateway: GatewayFactory,
) -> None:
    import socket

    from gateway.callbacks import CallbackServer

    server = CallbackServer()
    server.attach(make_gateway())
    server.start()
    try:
        port = int(server.url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /callbacks/sms/mo HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: -1\r\n\r\n" + b"x" * 1000
            )
            answer = sock.recv(200)
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 400")


def test_a_contact_id_of_all_digits_is_the_gateways_own_not_a_phone(
    make_gateway: GatewayFactory,
) -> None:
    """Regression: about 1 in 11,000 generated ids (ct_ and 20 hex digits)
    are all digits; the gateway refused its own id as a phone number."""
    gateway = make_gateway()
    add_contact(gateway)
    digits = "ct_68319034646629758954"
    with gateway.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE contacts SET contact_id = :id"), {"id": digits})

    response = gateway.send(
        SendInput(ContactRef(contact_id=digits), "sms", "marketing", "c", "hi", "k1",
                  at=AT)
    )  # fmt: skip

    assert response["decision"]["outcome"] == "ALLOW"
    assert response["decision"]["contact_id"] == digits


def test_new_contact_ids_never_read_like_a_phone_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = iter(["68319034646629758954", "0123abcdef0123abcdef"])
    monkeypatch.setattr(store_module.secrets, "token_hex", lambda _: next(draws))

    assert store_module.new_contact_id() == "ct_0123abcdef0123abcdef"
