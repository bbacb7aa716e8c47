"""The kannel channel plugin without Kannel: settings, sendsms URLs, callbacks.

Deliveries go to a scripted sendsms stand-in on 127.0.0.1 (tests/test_kannel.py
runs the real Kannel).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway import hookspecs
from gateway.hookspecs import DeliveryReport, InboundReply, OutboundMessage
from plugins.kannel import DLR_MASK, KannelPlugin, dlr_url, parse_dlr, parse_mo

PHONE = "+12125550123"
CALLBACKS = "http://127.0.0.1:8080/callbacks"


def _message(**overrides: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "channel": "sms",
        "to": PHONE,
        "body": "20% off & more: reply STOP to opt out",
        "contact_id": "ct_1",
        "campaign": "spring",
        "purpose": "marketing",
        "idempotency_key": "k1",
        "audit_seq": 42,
    }
    values.update(overrides)
    return OutboundMessage(**values)


def _plugin(**settings: str) -> KannelPlugin:
    plugin = KannelPlugin()
    plugin.tollgate_configure(
        {
            "kannel_sendsms_url": "http://127.0.0.1:13013/cgi-bin/sendsms",
            "kannel_username": "tester",
            "kannel_password": "s3cret",
            "callback_url": CALLBACKS,
            **settings,
        }
    )
    return plugin


def test_kannel_is_registered_through_the_entry_point_group() -> None:
    points = metadata.entry_points(group=hookspecs.PROJECT_NAME)
    assert "plugins.kannel:plugin" in {p.value for p in points}


# -- settings --------------------------------------------------------------


def test_without_a_sendsms_url_it_serves_no_channel() -> None:
    plugin = KannelPlugin()
    plugin.tollgate_configure({"callback_url": CALLBACKS})
    assert plugin.tollgate_channels() == {}
    assert plugin.tollgate_deliver(_message()) is None
    assert plugin.tollgate_parse_callback("sms", "dlr", {"seq": "1"}) is None


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        pytest.param("", {"sms": "phone"}, id="default-sms"),
        pytest.param("sms,alerts:phone", {"sms": "phone", "alerts": "phone"}, id="two"),
        pytest.param(" text , ", {"text": "phone"}, id="blanks-ignored"),
    ],
)
def test_configured_channels_need_phone_numbers(
    channels: str, expected: dict[str, str]
) -> None:
    assert _plugin(kannel_channels=channels).tollgate_channels() == expected


def test_an_email_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="'mail' is 'email'; Kannel sends to phone"):
        _plugin(kannel_channels="mail:email")


def test_a_sendsms_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="must be an http or https URL"):
        _plugin(kannel_sendsms_url="ftp://127.0.0.1/sendsms")


def test_configuring_again_forgets_the_previous_gateway() -> None:
    plugin = _plugin()
    plugin.tollgate_configure({"data_dir": "/tmp"})
    assert plugin.tollgate_channels() == {}


# -- the sendsms URL -------------------------------------------------------


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_request_carries_recipient_text_sender_and_dlr_callback() -> None:
    url = _plugin(kannel_from="55555").request_url(_message())
    assert url.startswith("http://127.0.0.1:13013/cgi-bin/sendsms?")
    assert _query(url) == {
        "username": "tester",
        "password": "s3cret",
        "from": "55555",
        "to": PHONE,
        "text": "20% off & more: reply STOP to opt out",
        "dlr-mask": str(DLR_MASK),
        "dlr-url": f"{CALLBACKS}/sms/dlr?seq=42&type=%d&smsc=%i",
    }


def test_the_request_is_url_encoded_for_kannel() -> None:
    url = _plugin().request_url(_message())
    raw = urlsplit(url).query
    assert "to=%2B12125550123" in raw  # a bare + would reach Kannel as a space
    assert "text=20%25%20off%20%26%20more" in raw
    # Kannel decodes dlr-url once, then fills in its own %d and %i
    assert "dlr-url=http%3A%2F%2F127.0.0.1%3A8080%2Fcallbacks%2Fsms%2Fdlr" in raw
    assert "%3Fseq%3D42%26type%3D%25d%26smsc%3D%25i" in raw


def test_the_default_sender_is_the_short_code_12345() -> None:
    assert _query(_plugin().request_url(_message()))["from"] == "12345"


def test_without_a_callback_url_no_delivery_report_is_asked_for() -> None:
    query = _query(_plugin(callback_url="").request_url(_message()))
    assert "dlr-url" not in query and "dlr-mask" not in query


def test_the_dlr_url_escapes_the_channel_name() -> None:
    assert dlr_url(CALLBACKS, "a/b", 7) == (
        f"{CALLBACKS}/a%2Fb/dlr?seq=7&type=%d&smsc=%i"
    )


# -- callbacks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "text"),
    [
        pytest.param({"from": PHONE, "body": "Stop  now", "text": "Stop now"},
                     "Stop  now", id="body-is-the-exact-text"),
        pytest.param({"from": PHONE, "text": "STOP"}, "STOP", id="text-without-body"),
        pytest.param({"from": PHONE}, "", id="empty-message"),
    ],
)  # fmt: skip
def test_a_reply_is_read_from_the_get_url(query: dict[str, str], text: str) -> None:
    reply = _plugin().tollgate_parse_callback("sms", "mo", query)
    assert isinstance(reply, InboundReply)
    assert (reply.sender, reply.text) == (PHONE, text)
    assert reply.provider_message_id.startswith("kannel-mo-")


def test_a_reply_id_is_stable_for_the_same_sender_time_and_body() -> None:
    first = {"from": PHONE, "body": "STOP", "ts": "2026-12-04 15:15:46"}
    again = parse_mo(dict(first))
    later = parse_mo({**first, "ts": "2026-12-04 15:15:47"})
    other = parse_mo({**first, "body": "START"})
    assert parse_mo(first).provider_message_id == again.provider_message_id
    assert later.provider_message_id != again.provider_message_id
    assert other.provider_message_id != again.provider_message_id
    assert PHONE not in again.provider_message_id


def test_a_reply_without_a_sender_is_malformed() -> None:
    with pytest.raises(ValueError, match=r"'from' .* is missing"):
        parse_mo({"body": "STOP"})


@pytest.mark.parametrize(
    ("kind", "status"),
    [(1, "delivered"), (2, "failed"), (4, "buffered"), (8, "accepted"), (16, "failed")],
    ids=["delivered", "failed", "buffered", "smsc-ack", "smsc-reject"],
)
def test_kannel_report_types_map_to_statuses(kind: int, status: str) -> None:
    report = _plugin().tollgate_parse_callback(
        "sms", "dlr", {"seq": "42", "type": str(kind), "smsc": "fake-mt"}
    )
    assert report == DeliveryReport(
        audit_seq=42, status=status, detail=f"kannel type {kind}"
    )


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        pytest.param({"type": "1"}, "'seq' .* is missing", id="no-seq"),
        pytest.param({"seq": "x", "type": "1"}, "'seq' .* integer, got 'x'",
                     id="seq-not-a-number"),
        pytest.param({"seq": "0", "type": "1"}, "1 or more, got 0", id="seq-zero"),
        pytest.param({"seq": "4"}, "'type' .* is missing", id="no-type"),
        pytest.param({"seq": "4", "type": "%d"}, "integer, got '%d'",
                     id="type-not-filled-in"),
        pytest.param({"seq": "4", "type": "3"}, "one of 1, 2, 4, 8, 16, got 3",
                     id="unknown-type"),
    ],
)  # fmt: skip
def test_a_malformed_delivery_report_is_refused(
    query: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_dlr(query)


def test_callbacks_for_other_channels_are_left_to_other_plugins() -> None:
    assert _plugin().tollgate_parse_callback("mail", "mo", {"from": PHONE}) is None


def test_an_unknown_callback_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown callback kind 'status'"):
        _plugin().tollgate_parse_callback("sms", "status", {})


# -- delivering to a sendsms stand-in --------------------------------------


@dataclass
class FakeSendsms:
    """Answers every GET with `status` and `body`; records the queries."""

    status: int = 202
    body: str = "0: Accepted for delivery"
    queries: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def sendsms() -> Iterator[FakeSendsms]:
    fake = FakeSendsms()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.queries.append(_query(self.path))
            body = fake.body.encode()
            self.send_response(fake.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/sendsms"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_accepted_for_delivery_gives_an_id_naming_the_decision(
    sendsms: FakeSendsms,
) -> None:
    result = _plugin(kannel_sendsms_url=sendsms.url).tollgate_deliver(_message())
    assert result is not None
    assert (result.provider_message_id, result.error) == ("kannel-sms-42", "")
    [query] = sendsms.queries
    assert query["to"] == PHONE and query["dlr-mask"] == "31"


def test_a_re_delivery_of_the_same_key_is_not_sent_again(
    sendsms: FakeSendsms,
) -> None:
    plugin = _plugin(kannel_sendsms_url=sendsms.url)
    first = plugin.tollgate_deliver(_message())
    again = plugin.tollgate_deliver(_message(audit_seq=43))
    other = plugin.tollgate_deliver(_message(idempotency_key="k2", audit_seq=44))
    assert first == again
    assert other is not None and other.provider_message_id == "kannel-sms-44"
    assert len(sendsms.queries) == 2


def test_a_refused_request_is_a_failed_delivery_without_the_number(
    sendsms: FakeSendsms,
) -> None:
    sendsms.status, sendsms.body = 403, f"Authorization failed for {PHONE} 5551234"
    plugin = _plugin(kannel_sendsms_url=sendsms.url)
    result = plugin.tollgate_deliver(_message())
    assert result is not None and not result.provider_message_id
    assert "kannel sendsms answered HTTP 403, expected 202" in result.error
    assert "Authorization failed for" in result.error
    assert "2125550123" not in result.error and "5551234" not in result.error
    plugin.tollgate_deliver(_message())
    assert len(sendsms.queries) == 2  # a failure is not remembered: retried


def test_an_unreachable_kannel_is_a_failed_delivery_without_the_number() -> None:
    with socket.socket() as holder:  # a port nobody listens on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cgi-bin/sendsms"
    result = _plugin(kannel_sendsms_url=url).tollgate_deliver(_message())
    assert result is not None and not result.provider_message_id
    assert result.error.startswith("kannel sendsms unreachable: ConnectionRefused")
    assert "2125550123" not in result.error and "s3cret" not in result.error
