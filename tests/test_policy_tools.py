"""Explain, diff and replay: the compliance officer's tools around a bundle."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import grpc
from click.testing import CliRunner

from gateway.app import default_policies
from gateway.cli import main
from gateway.policy import diff_bundles, load_bundle
from gateway.service import Gateway, SendInput
from support import AT, GatewayFactory, add_contact
from tollgate.v1 import gateway_pb2 as pb
from tollgate.v1 import gateway_pb2_grpc as pb_grpc

Live = tuple[pb_grpc.GatewayStub, Gateway, grpc.Channel]


def _copy(folder: Path) -> Path:
    shutil.copytree(
        default_policies(),
        folder,
        ignore=shutil.ignore_patterns("tests", "*.py", "__pycache__"),
    )
    return folder


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_check_explains_every_policy_variable_and_deferral(grpc_stub: Live) -> None:
    stub, _, _ = grpc_stub
    stub.UpsertContact(pb.UpsertContactRequest(external_id="fl", phone="+13055550123"))
    stub.RecordConsent(
        pb.RecordConsentRequest(
            contact=pb.ContactRef(external_id="fl"), channel="sms",
            purpose=pb.PURPOSE_MARKETING, granted=True, source="web_form",
        )
    )  # fmt: skip
    at = pb.SendRequest().at
    at.FromJsonString("2026-12-08T01:30:00Z")  # 20:30 in Miami
    request = pb.SendRequest(
        contact=pb.ContactRef(external_id="fl"), channel="sms",
        purpose=pb.PURPOSE_MARKETING, body="hi", at=at,
    )  # fmt: skip
    response = stub.Check(request)
    policies = {p.policy_id: p for p in response.explanation}
    quiet = policies["quiet-hours"]
    assert response.decision.outcome == pb.DEFER
    assert set(policies) == {
        "channel-capability", "consent", "frequency-caps", "holidays",
        "opt-out-confirmation", "quiet-hours", "suppression", "tier-caps",
        "tier-roles",
    }  # fmt: skip
    assert quiet.status == "applied"
    assert dict(quiet.variables["window"]) == {
        "start": "08:00",
        "end": "20:00",
    }
    outside = {r.rule_id: r for r in quiet.rules}["quiet-hours.outside-window"]
    assert outside.fired and outside.mode == "enforce"
    assert outside.not_before.ToJsonString() == "2026-12-08T13:00:00Z"
    caps = {r.rule_id: r for r in policies["frequency-caps"].rules}
    assert caps["frequency-caps.marketing-3-per-24h"].detail.startswith(
        "0 of at most 3"
    )
    assert policies["suppression"].rules[0].fired is False


def test_warn_mode_allows_and_reports_shadow_mode_only_audits(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    folder = _copy(tmp_path / "bundle")
    _edit(
        folder / "suppression.yaml",
        "match: 'message.purpose",
        "mode: warn\nmatch: 'message.purpose",
    )
    _edit(
        folder / "consent.yaml",
        "match: 'message.purpose",
        "mode: shadow\nmatch: 'message.purpose",
    )
    (folder / "tier-roles.yaml").unlink()  # customers' tier takes promo SMS away
    gateway = make_gateway(policies=folder)
    ref = add_contact(gateway, consent=False, stage="converted")
    response = gateway.send(SendInput(ref, "sms", "marketing", "c", "hi", "k1", at=AT))
    decision = response["decision"]
    assert decision["outcome"] == "ALLOW"
    assert [w["rule_id"] for w in decision["warnings"]] == ["suppression.converted"]
    assert decision["reasons"] == []
    [record] = [r for r in gateway.store.audit_records() if r.kind == "decision"]
    fired = {(r["rule_id"], r["mode"]) for r in record.body["reasons"]}
    assert fired == {
        ("suppression.converted", "warn"),
        ("consent.marketing-needs-grant", "shadow"),
    }


def test_a_policy_outside_its_effective_dates_does_not_apply(tmp_path: Path) -> None:
    folder = _copy(tmp_path / "bundle")
    _edit(
        folder / "suppression.yaml",
        "match: 'message.purpose",
        "effective_from: 2027-01-01\nmatch: 'message.purpose",
    )
    input_file = tmp_path / "input.yaml"
    input_file.write_text(
        textwrap.dedent(
            """
            at: 2026-07-15T16:00:00Z
            contact: {stage: converted, tier: "", phone: "+12125550123",
                      consent: {"sms:marketing": granted}}
            message: {channel: sms, purpose: marketing}
            """
        )
    )
    result = CliRunner().invoke(
        main, ["policy", "explain", str(input_file), str(folder)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("decision: ALLOW")
    assert "policy suppression: not in effect" in result.output


def test_explain_names_the_rules_their_variables_and_when_a_defer_clears(
    tmp_path: Path,
) -> None:
    input_file = tmp_path / "input.yaml"
    input_file.write_text(
        "at: 2026-12-08T01:30:00Z\n"
        'contact: {phone: "+13055550123", consent: {"sms:marketing": granted}}\n'
        "message: {channel: sms, purpose: marketing}\n"
        "sends: [{ago: 1h}, {ago: 2h}, {ago: 3h}]\n"
    )
    result = CliRunner().invoke(main, ["policy", "explain", str(input_file)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # a new lead: the bundle cap clears at 22:30, the tier's (2 a day) at 23:30
    assert lines[0] == "decision: DEFER until 2026-12-08T23:30:00Z"
    assert "  variable window = {'start': '08:00', 'end': '20:00'}" in lines
    text = result.output
    quiet = "rule quiet-hours.outside-window [defer, enforce]: fired"
    assert f"{quiet}, clears 2026-12-08T13:00:00Z" in text
    assert "contact tier: new-high-intent" in lines
    cap = "cap frequency-caps.marketing-3-per-24h [defer, enforce]: fired"
    assert f"{cap}, clears 2026-12-08T22:30:00Z (3 of at most 3" in text
    tier_cap = "cap tiers.marketing-per-day [defer, enforce]: fired"
    assert f"{tier_cap}, clears 2026-12-08T23:30:00Z (3 of at most 2" in text


def test_diff_lists_rules_added_removed_and_changed(tmp_path: Path) -> None:
    old = _copy(tmp_path / "old")
    new = _copy(tmp_path / "new")
    _edit(new / "frequency-caps.yaml", "max: 3", "max: 2")
    (new / "channel-capability.yaml").unlink()
    minor = (
        "  - id: suppression.minor\n"
        "    effect: deny\n"
        "    condition: 'contact.attributes.age < 18'\n"
        "    message: Minors receive no marketing.\n"
    )
    _edit(
        new / "suppression.yaml",
        "  - id: suppression.do-not-contact",
        minor + "  - id: suppression.do-not-contact",
    )
    result = diff_bundles(load_bundle(old), load_bundle(new))
    assert result.added == ["rule suppression.minor"]
    assert result.removed == [
        "policy channel-capability",
        "rule channel.sms-to-landline",
    ]
    assert result.changed == {"cap frequency-caps.marketing-3-per-24h": ["max"]}
    cli = CliRunner().invoke(main, ["policy", "diff", str(old), str(new)])
    assert cli.exit_code == 0
    assert "~ cap frequency-caps.marketing-3-per-24h: max changed" in cli.output


def test_diff_lists_tiers_changed_and_reordered(tmp_path: Path) -> None:
    old = _copy(tmp_path / "old")
    new = _copy(tmp_path / "new")
    _edit(new / "tiers.yaml", "marketing_per_day: 2", "marketing_per_day: 1")
    text = (new / "tiers.yaml").read_text()
    head, _, rest = text.partition("  - id: in-pipeline\n")
    pipeline, _, others = rest.partition("  - id: customer-expansion\n")
    (new / "tiers.yaml").write_text(
        head + "  - id: customer-expansion\n" + others.rstrip("\n") + "\n\n"
        "  - id: in-pipeline\n" + pipeline
    )

    result = diff_bundles(load_bundle(old), load_bundle(new))

    assert (result.added, result.removed) == ([], [])
    assert result.changed == {
        "tier new-high-intent": ["caps"],
        "tiers": ["order"],
    }


def test_replay_shows_which_recorded_decisions_a_change_would_flip(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = make_gateway()
    for i in range(4):
        ref = add_contact(gateway, f"c{i}", phone=f"+1212555{100 + i:04d}")
        for k in range(i):  # contact i already received i messages
            gateway.send(
                SendInput(ref, "sms", "marketing", "c", "hi", f"pre{i}{k}", at=AT)
            )
        gateway.send(SendInput(ref, "sms", "marketing", "c", "hi", f"k{i}", at=AT))
    candidate = _copy(tmp_path / "candidate")
    # new leads' own cap from 2 marketing messages a day to 1
    _edit(candidate / "tiers.yaml", "marketing_per_day: 2", "marketing_per_day: 1")
    url = f"sqlite:///{tmp_path / 'tollgate.db'}"
    result = CliRunner().invoke(
        main, ["policy", "replay", "--bundle", str(candidate), "--db", url]
    )
    assert result.exit_code == 0, result.output
    # allowed decisions made after 1 earlier send: the 2nd of c1, c2 and c3
    # (the 3rd ones were already held by the cap of 2)
    lines = result.output.splitlines()
    assert lines[0] == "10 recorded decisions replayed, 3 would change"
    assert lines[1].split() == ["ALLOW", "->", "DEFER", "3"]
    assert "  + tiers.marketing-per-day" in result.output


def test_a_tier_condition_that_fails_denies_the_message_and_says_why(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    folder = _copy(tmp_path / "bundle")
    # reads an attribute most contacts lack: an error for them, not a "false"
    _edit(
        folder / "tiers.yaml",
        "    when: 'contact.stage == \"new\"'",
        '    when: \'contact.stage == "new" && contact.attributes.segment == "a"\'',
    )
    gateway = make_gateway(policies=folder)
    ref = add_contact(gateway, stage="new")

    response = gateway.send(SendInput(ref, "sms", "marketing", "c", "hi", "k1", at=AT))

    decision = response["decision"]
    assert decision["outcome"] == "DENY"
    [reason] = decision["reasons"]
    assert reason["rule_id"] == "tiers.error"
    assert "tier 'new-high-intent'" in reason["message"]
    assert "segment" in reason["message"]
    result = CliRunner().invoke(
        main, ["policy", "explain", str(_new_lead_input(tmp_path)), str(folder)]
    )
    assert result.output.startswith("decision: DENY\n  error tiers.error:"), (
        result.output
    )


def _new_lead_input(tmp_path: Path) -> Path:
    path = tmp_path / "input.yaml"
    path.write_text(
        "at: 2026-07-15T16:00:00Z\n"
        'contact: {stage: new, phone: "+12125550123",'
        ' consent: {"sms:marketing": granted}}\n'
        "message: {channel: sms, purpose: marketing}\n"
    )
    return path


def test_replaying_the_bundle_that_decided_changes_nothing(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = make_gateway()
    with_phone = add_contact(gateway, "c1")
    no_phone = add_contact(gateway, "c2", phone="", consent=False)
    for i, ref in enumerate([with_phone, no_phone, with_phone, with_phone]):
        gateway.send(SendInput(ref, "sms", "marketing", "c", "hi", f"k{i}", at=AT))
    outcomes = [
        r.body["outcome"] for r in gateway.store.audit_records() if r.kind == "decision"
    ]
    assert sorted(outcomes) == ["ALLOW", "ALLOW", "DEFER", "DENY"]
    url = f"sqlite:///{tmp_path / 'tollgate.db'}"

    result = CliRunner().invoke(
        main, ["policy", "replay", "--bundle", str(default_policies()), "--db", url]
    )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "4 recorded decisions replayed, 0 would change"
    ]
