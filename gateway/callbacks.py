"""The gateway's small HTTP endpoint for providers' callbacks (MO and DLR).

SMS providers report replies (MO) and delivery reports (DLR) by calling a URL.
This server listens on loopback only and serves ``/callbacks/<channel>/<kind>``:
the channel's plugin reads the provider's parameters (hook
`tollgate_parse_callback`), then the gateway records and acts: a reply goes
to `Gateway.report_inbound`, a delivery report to the audit log against its
decision. A malformed callback is answered 400 and changes nothing; the body
of every answer is empty, so a provider that would relay it as a text to the
contact relays nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from audit import AuditError
from gateway.errors import InvalidRequestError, TollgateError
from gateway.hookspecs import DeliveryReport
from gateway.service import Gateway, InboundInput

log = logging.getLogger(__name__)

PREFIX = "/callbacks/"
MAX_BODY = 64_000


class CallbackServer:
    """A threaded HTTP server bound to 127.0.0.1; started and stopped by us."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._gateway: Gateway | None = None
        handler = type("Handler", (_Handler,), {"owner": self})
        self._http = ThreadingHTTPServer((host, port), handler)
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}{PREFIX.rstrip('/')}"

    def attach(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def start(self) -> None:
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
        self._http.server_close()

    def handle(self, path: str, query: dict[str, str]) -> int:
        """Dispatch one callback; return the HTTP status to answer."""
        if self._gateway is None or not path.startswith(PREFIX):
            return 404
        parts = path[len(PREFIX) :].strip("/").split("/")
        if len(parts) != 2:
            return 404
        channel, kind = parts
        try:
            event = self._gateway.channels.parse_callback(channel, kind, query)
            if isinstance(event, DeliveryReport):
                self._gateway.record_delivery_report(channel, event)
            else:
                self._gateway.report_inbound(
                    InboundInput(
                        channel=channel,
                        sender=event.sender,
                        text=event.text,
                        provider_message_id=event.provider_message_id,
                        received_at=_instant(event.received_at),
                    )
                )
        except (TollgateError, AuditError) as exc:
            log.warning("callback %s/%s refused: %s", channel, kind, exc)
            return 400
        except Exception:
            log.exception("callback %s/%s failed", channel, kind)
            return 500
        return 200


def _instant(text: str) -> datetime | None:
    """A provider's ISO 8601 time; a time without offset is taken as UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequestError("received_at", "is not an ISO 8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Handler(BaseHTTPRequestHandler):
    owner: CallbackServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {
            k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()
        }
        self._answer(self.owner.handle(parts.path, query))

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._answer(400 if length < 0 else 413)
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        parts = urlsplit(self.path)
        fields = parse_qs(parts.query, keep_blank_values=True)
        fields.update(parse_qs(body, keep_blank_values=True))
        self._answer(
            self.owner.handle(parts.path, {k: v[0] for k, v in fields.items()})
        )

    def do_PUT(self) -> None:
        self._answer(405)

    do_DELETE = do_PATCH = do_PUT

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # The query holds phone numbers and texts: nothing of it is logged.
        log.debug("callback answered %s", args[1] if len(args) > 1 else "")
