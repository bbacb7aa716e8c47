"""The example third-party plugin in examples/tollgate-webhook, installed by ./run.

It runs inside a real gateway against a local HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from gateway import hookspecs
from gateway.app import Settings, build_gateway
from gateway.service import Gateway, SendInput
from support import AT, NY_PHONE, add_contact


@dataclass
class Receiver:
    """What the local webhook receiver answers, and what it was sent."""

    url: str
    status: int = 200
    answer: dict[str, Any] = field(default_factory=lambda: {"id": "rcv-1"})
    seen: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            state[0].seen.append((dict(self.headers.items()), body))
            data = json.dumps(state[0].answer).encode()
            self.send_response(state[0].status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    state.append(Receiver(url=f"http://127.0.0.1:{port}/hook"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def webhook_gateway(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gateway]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # talk to 127.0.0.1 directly
    monkeypatch.setenv("TOLLGATE_PLUGIN_WEBHOOK_URL", receiver.url)
    gateway = build_gateway(
        Settings(data_dir=tmp_path, outbox_channels="", unsafe_client_clock=True)
    )
    try:
        yield gateway
    finally:
        gateway.store.close()


def _send(gateway: Gateway) -> dict[str, Any]:
    ref = add_contact(gateway, consent=False)
    return gateway.send(
        SendInput(
            contact=ref,
            channel="webhook",
            purpose="transactional",
            campaign="alerts",
            body="Your card was used abroad.",
            idempotency_key="wh-1",
            at=AT,
        )
    )


def test_the_webhook_entry_point_is_installed() -> None:
    points = metadata.entry_points(group=hookspecs.PROJECT_NAME)
    [point] = [p for p in points if p.name == "webhook"]
    assert point.value == "tollgate_webhook:plugin"


def test_a_message_is_posted_to_the_webhook(
    webhook_gateway: Gateway, receiver: Receiver
) -> None:
    response = _send(webhook_gateway)

    [(headers, body)] = receiver.seen
    assert headers["Idempotency-Key"] == "wh-1"
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "contact_id": response["decision"]["contact_id"],
        "body": "Your card was used abroad.",
        "campaign": "alerts",
        "purpose": "transactional",
        "idempotency_key": "wh-1",
        "audit_seq": response["decision"]["audit_seq"],
        "to": NY_PHONE,
    }
    assert body["contact_id"].startswith("ct_")
    assert response["delivery"]["status"] == "FORWARDED"
    assert response["delivery"]["provider_message_id"] == "rcv-1"


def test_a_failing_receiver_is_a_failed_delivery_without_the_phone(
    webhook_gateway: Gateway, receiver: Receiver
) -> None:
    receiver.status = 500
    receiver.answer = {"error": "boom"}

    response = _send(webhook_gateway)

    assert len(receiver.seen) == 1
    delivery = response["delivery"]
    assert delivery["status"] == "FAILED"
    assert not delivery["provider_message_id"]
    assert "500" in delivery["error"]
    assert NY_PHONE not in delivery["error"]
    assert NY_PHONE.lstrip("+") not in delivery["error"]
