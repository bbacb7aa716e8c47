"""Channel plugins: registration through entry points, and the plugin boundary."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import pytest

import audit
from gateway import hookspecs
from gateway.errors import PluginError
from gateway.hookspecs import DeliveryResult, OutboundMessage, hookimpl
from gateway.service import SendInput
from support import AT, NY_PHONE, GatewayFactory, add_contact

ROOT = Path(__file__).resolve().parent.parent


class Pager:
    """A third-party plugin serving channel 'pager', with a scripted answer."""

    def __init__(self, answer: object = None, channels: object = None) -> None:
        self.answer = answer
        self.channels = channels if channels is not None else {"pager": "phone"}
        self.seen: list[OutboundMessage] = []

    @hookimpl
    def tollgate_channels(self) -> object:
        return self.channels

    @hookimpl
    def tollgate_deliver(self, message: OutboundMessage) -> object:
        if message.channel != "pager":
            return None
        self.seen.append(message)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _page(make_gateway: GatewayFactory, plugin: Pager) -> dict[str, object]:
    gateway = make_gateway(plugins=(plugin,))
    ref = add_contact(gateway, consent=False)
    response = gateway.send(
        SendInput(
            contact=ref,
            channel="pager",
            purpose="transactional",
            campaign="alerts",
            body="Your card was used abroad.",
            idempotency_key="p1",
            at=AT,
        )
    )
    records = list(gateway.store.audit_records())
    audit.verify_chain(records)
    return {"response": response, "records": records}


def test_outbox_is_registered_through_the_entry_point_group() -> None:
    points = metadata.entry_points(group=hookspecs.PROJECT_NAME)
    assert "plugins.outbox:plugin" in {p.value for p in points}


def test_a_third_party_plugin_receives_only_the_plain_message(
    make_gateway: GatewayFactory,
) -> None:
    plugin = Pager(answer=DeliveryResult(provider_message_id="pg-1"))
    result = _page(make_gateway, plugin)
    response = result["response"]
    assert isinstance(response, dict)
    assert response["delivery"]["status"] == "FORWARDED"
    assert response["delivery"]["provider_message_id"] == "pg-1"
    [message] = plugin.seen
    assert message.to == NY_PHONE and message.contact_id.startswith("ct_")
    assert message.audit_seq == response["decision"]["audit_seq"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(
            RuntimeError("socket closed"), "plugin raised RuntimeError", id="raises"
        ),
        pytest.param(
            {"id": "x"}, "answered dict, expected DeliveryResult", id="wrong-type"
        ),
        pytest.param(DeliveryResult(), "exactly one of", id="empty-result"),
        pytest.param(
            DeliveryResult(provider_message_id="a", error="b"),
            "exactly one of",
            id="both",
        ),
    ],
)
def test_a_failing_plugin_is_a_recorded_failed_delivery(
    make_gateway: GatewayFactory, answer: object, error: str
) -> None:
    result = _page(make_gateway, Pager(answer=answer))
    response = result["response"]
    assert isinstance(response, dict)
    assert response["decision"]["outcome"] == "ALLOW"
    assert response["delivery"]["status"] == "FAILED"
    assert error in response["delivery"]["error"]
    records = result["records"]
    assert isinstance(records, list)
    assert records[-1].kind == "delivery" and records[-1].body["status"] == "FAILED"


def test_two_plugins_claiming_one_channel_are_refused(
    make_gateway: GatewayFactory,
) -> None:
    with pytest.raises(PluginError, match="'pager' is claimed by both"):
        make_gateway(plugins=(Pager(), Pager()))


@pytest.mark.parametrize(
    "channels",
    [["pager"], {"pager": "carrier-pigeon"}, {"": "phone"}],
    ids=["list", "bad-kind", "empty-name"],
)
def test_a_malformed_channel_declaration_is_refused(
    make_gateway: GatewayFactory, channels: object
) -> None:
    with pytest.raises(PluginError, match="tollgate_channels must return a mapping"):
        make_gateway(plugins=(Pager(channels=channels),))


def _hooks() -> list[str]:
    return sorted(name for name in vars(hookspecs) if name.startswith("tollgate_"))


def test_every_hook_has_a_section_in_the_plugin_guide() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^### `(tollgate_\w+)`", guide, flags=re.MULTILINE))
    assert _hooks(), "no hooks found"
    assert set(_hooks()) == sections


def test_outbox_serves_configured_channels(tmp_path: Path) -> None:
    from plugins.outbox import OutboxPlugin

    plugin = OutboxPlugin()
    settings: Mapping[str, str] = {
        "data_dir": str(tmp_path),
        "outbox_channels": "sms,mail:email",
    }
    plugin.tollgate_configure(settings)
    assert plugin.tollgate_channels() == {
        "sms": "phone",
        "mail": "email",
    }
