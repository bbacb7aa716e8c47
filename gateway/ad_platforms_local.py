"""Local stand-ins for two ad platforms' audience APIs, for the demo and tests.

`LocalMeta` answers Meta's Custom Audience users edge (``POST`` and ``DELETE``
``/<version>/<audience id>/users``); `LocalGoogle` answers Google's Data
Manager API (``POST /v1/audienceMembers:ingest`` and ``:remove``). They are
not the platforms: they check each request against the documented format
(schema, 64-hex SHA-256 digests, at most 10,000 rows or members a request,
upload sessions in order, one destination of the right account, ``HEX``
encoding, DMA consent where required, the access token), refuse a bad one with
the platform's status and error shape, and keep what they accepted. Nothing
ever reaches Meta or Google.

State, read under `lock`: `audiences` (audience id -> set of digests),
`requests` (one summary per request: counts, no digests) and `changed_at`
((audience id, digest) -> the operation that last changed it and the
`time.monotonic` instant its request arrived), which lets a caller measure how
long a change took to reach the platform.

Faults a test scripts: `rate_limited` (answer that many requests with 429 and
`retry_after`), `reject` (digests to refuse: Meta samples them as invalid
rows, Google fails the whole request naming them), `LocalMeta.too_small_on_delete`
("audience size too low"), `LocalGoogle.daily_quota_once` (a per-day quota
429) and `LocalGoogle.require_consent`.

`serve` runs one on 127.0.0.1 and a free port. Standard library only; nothing
is logged (every value handled is a digest of personal data).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["MAX_ROWS", "LocalGoogle", "LocalMeta", "serve"]

HOST = "127.0.0.1"
HEX64 = re.compile(r"[0-9a-f]{64}")
# Both platforms take at most 10,000 rows (Meta) or members (Google) a request;
# see plugins/meta_audiences.py and plugins/google_customer_match.py.
MAX_ROWS = 10_000
META_SCHEMA = ["EMAIL_SHA256", "PHONE_SHA256"]
CONSENT_VALUES = {"CONSENT_GRANTED", "CONSENT_DENIED"}


class _RefusedError(Exception):
    """A request refused, with the HTTP status and JSON body to answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


@dataclass
class _Platform:
    token: str
    audiences: dict[str, set[str]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    changed_at: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    rate_limited: int = 0  # answer this many next requests with 429
    retry_after: str = "1"
    reject: set[str] = field(default_factory=set)  # digests to refuse
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def members(self, audience_id: str) -> set[str]:
        """The digests an audience holds now (a copy)."""
        with self.lock:
            return set(self.audiences.get(audience_id, ()))

    def holds(self, audience_id: str, digest: str) -> bool:
        """Whether an audience holds `digest` now."""
        with self.lock:
            return digest in self.audiences.get(audience_id, ())

    def last_change(self, audience_id: str, digest: str) -> tuple[str, float] | None:
        """("add" or "remove", `time.monotonic` arrival of its request) of the
        last change of `digest` in an audience, if any."""
        with self.lock:
            return self.changed_at.get((audience_id, digest))

    def _apply(
        self, audience_id: str, adding: bool, digests: set[str], received: float
    ) -> None:
        """Add or remove `digests`; the caller holds `lock`."""
        stored = self.audiences.setdefault(audience_id, set())
        if adding:
            stored |= digests
        else:
            stored -= digests
        operation = "add" if adding else "remove"
        for digest in digests:
            self.changed_at[audience_id, digest] = (operation, received)


# -- Meta ------------------------------------------------------------------


@dataclass
class LocalMeta(_Platform):
    """Meta's Custom Audience users edge."""

    too_small_on_delete: bool = False
    sessions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        received = time.monotonic()
        match = re.fullmatch(r"/(v\d+\.\d+)/([^/]+)/users", path)
        if method not in ("POST", "DELETE") or match is None:
            raise _RefusedError(404, _meta_error("Unknown path or method", 803))
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("access_token") != self.token:
            raise _RefusedError(400, _meta_error("Invalid OAuth access token", 190))
        payload = json.loads(form.get("payload", "null"))
        session = json.loads(form.get("session", "null"))
        rows = _meta_rows(payload)
        _check_session(session)
        audience_id = match.group(2)
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "audience": audience_id,
                    "rows": len(rows),
                    "session": session,
                }
            )
            if self.rate_limited:
                self.rate_limited -= 1
                raise _RefusedError(429, _meta_error("User request limit reached", 17))
            self._check_sequence(session)
            if method == "DELETE" and self.too_small_on_delete:
                raise _RefusedError(
                    400,
                    _meta_error(
                        "Audience Size too low: You cannot remove users from this "
                        "audience because it will result in a low audience size.",
                        100,
                        title="Audience Size too low",
                    ),
                )
            invalid = [row for row in rows if self.reject & set(row)]
            accepted = {value for row in rows if row not in invalid for value in row}
            self._apply(audience_id, method == "POST", accepted - {""}, received)
        samples = [value for row in invalid for value in row if value in self.reject]
        return 200, {
            "audience_id": audience_id,
            "session_id": session["session_id"],
            "num_received": len(rows),
            "num_invalid_entries": len(invalid),
            "invalid_entry_samples": samples,
        }

    def _check_sequence(self, session: dict[str, Any]) -> None:
        seen = self.sessions.setdefault(session["session_id"], [])
        if seen and seen[-1]["last_batch_flag"]:
            raise _RefusedError(400, _meta_error("Session already finished", 100))
        if session["batch_seq"] != len(seen) + 1:
            raise _RefusedError(400, _meta_error("batch_seq out of order", 100))
        seen.append(session)


def _meta_error(message: str, code: int, title: str = "") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if title:
        error["error_user_title"] = title
    return {"error": error}


def _meta_rows(payload: Any) -> list[tuple[str, ...]]:
    if not isinstance(payload, dict) or payload.get("schema") != META_SCHEMA:
        raise _RefusedError(400, _meta_error("Data does not match schema", 100))
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise _RefusedError(400, _meta_error("Data is missing", 100))
    if len(data) > MAX_ROWS:
        raise _RefusedError(400, _meta_error("Too many rows in one request", 100))
    rows = []
    for row in data:
        if not (isinstance(row, list) and len(row) == len(META_SCHEMA)):
            raise _RefusedError(400, _meta_error("Row does not match schema", 100))
        if any(value and not HEX64.fullmatch(value) for value in row):
            raise _RefusedError(400, _meta_error("Value is not a SHA-256 hex", 100))
        rows.append(tuple(row))
    return rows


def _check_session(session: Any) -> None:
    fields = {
        "session_id": int,
        "batch_seq": int,
        "last_batch_flag": bool,
        "estimated_num_total": int,
    }
    if not isinstance(session, dict) or any(
        not isinstance(session.get(name), kind) for name, kind in fields.items()
    ):
        raise _RefusedError(400, _meta_error("session is malformed", 100))


# -- Google ----------------------------------------------------------------


@dataclass
class LocalGoogle(_Platform):
    """Google's Data Manager API, audienceMembers ingest and remove."""

    operating_account: str = ""
    require_consent: bool = False
    daily_quota_once: bool = False

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        received = time.monotonic()
        operation = {
            "/v1/audienceMembers:ingest": "ingest",
            "/v1/audienceMembers:remove": "remove",
        }.get(path)
        if method != "POST" or operation is None:
            raise _RefusedError(404, _google_error(404, "NOT_FOUND", []))
        request = json.loads(body)
        allowed = {
            "destinations",
            "audienceMembers",
            "validateOnly",
            "encoding",
            "encryptionInfo",
        } | ({"consent", "termsOfService"} if operation == "ingest" else set())
        if set(request) - allowed:
            raise _RefusedError(400, _google_error(400, "INVALID_ARGUMENT", []))
        audience_id = self._destination(request)
        members = self._members(request)
        if operation == "ingest" and self.require_consent:
            _check_consent(request.get("consent", {}))
        with self.lock:
            self.requests.append(
                {
                    "operation": operation,
                    "audience": audience_id,
                    "members": len(members),
                    "consent": request.get("consent"),
                }
            )
            if self.rate_limited or self.daily_quota_once:
                limit = (
                    "IngestionMutateRequestsPerDayPerProject"
                    if self.daily_quota_once
                    else "IngestionMutateRequestsPerMinutePerProject"
                )
                self.rate_limited = max(0, self.rate_limited - 1)
                self.daily_quota_once = False
                raise _RefusedError(
                    429, _google_error(429, "RESOURCE_EXHAUSTED", [], quota_limit=limit)
                )
            bad = [
                {
                    "field": f"audience_members.audience_members[{index}]",
                    "reason": "INVALID_SHA256_FORMAT",
                }
                for index, digests in enumerate(members)
                if digests & self.reject
            ]
            if bad:  # fast-fail: nothing in the request is applied
                raise _RefusedError(400, _google_error(400, "INVALID_ARGUMENT", bad))
            accepted = set[str]().union(*members)
            self._apply(audience_id, operation == "ingest", accepted, received)
        return 200, {"requestId": str(uuid.uuid4())}

    def _destination(self, request: dict[str, Any]) -> str:
        destinations = request.get("destinations")
        if not isinstance(destinations, list) or len(destinations) != 1:
            raise _RefusedError(400, _google_error(400, "INVALID_DESTINATION", []))
        destination = destinations[0]
        account = destination.get("operatingAccount", {})
        if account != {
            "accountType": "GOOGLE_ADS",
            "accountId": self.operating_account,
        }:
            raise _RefusedError(400, _google_error(400, "INVALID_DESTINATION", []))
        audience_id = destination.get("productDestinationId")
        if not isinstance(audience_id, str) or not audience_id:
            raise _RefusedError(400, _google_error(400, "INVALID_DESTINATION", []))
        return audience_id

    def _members(self, request: dict[str, Any]) -> list[set[str]]:
        if request.get("encoding") != "HEX":
            raise _RefusedError(
                400,
                _google_error(
                    400,
                    "INVALID_ARGUMENT",
                    [{"field": "encoding", "reason": "REQUIRED_FIELD_MISSING"}],
                ),
            )
        members = request.get("audienceMembers")
        if not isinstance(members, list) or not members:
            raise _RefusedError(400, _google_error(400, "REQUIRED_FIELD_MISSING", []))
        if len(members) > MAX_ROWS:
            raise _RefusedError(
                400,
                _google_error(
                    400,
                    "INVALID_ARGUMENT",
                    [
                        {
                            "field": "audience_members",
                            "reason": "TOO_MANY_AUDIENCE_MEMBERS",
                        }
                    ],
                ),
            )
        return [_member_digests(index, member) for index, member in enumerate(members)]


def _member_digests(index: int, member: Any) -> set[str]:
    """The digests of one audience member; refuses a malformed member."""
    problem = {
        "field": f"audience_members.audience_members[{index}]",
        "reason": "INVALID_AUDIENCE_MEMBER",
    }
    identifiers = member.get("userData", {}).get("userIdentifiers")
    if not isinstance(identifiers, list) or not 1 <= len(identifiers) <= 10:
        raise _RefusedError(400, _google_error(400, "INVALID_ARGUMENT", [problem]))
    digests = set()
    for identifier in identifiers:
        if len(identifier) != 1 or not set(identifier) <= {
            "emailAddress",
            "phoneNumber",
        }:
            raise _RefusedError(400, _google_error(400, "INVALID_ARGUMENT", [problem]))
        value = next(iter(identifier.values()))
        if not HEX64.fullmatch(value):
            problem["reason"] = "INVALID_SHA256_FORMAT"
            raise _RefusedError(400, _google_error(400, "INVALID_ARGUMENT", [problem]))
        digests.add(value)
    return digests


def _check_consent(consent: Any) -> None:
    given = consent if isinstance(consent, dict) else {}
    values = {given.get("adUserData"), given.get("adPersonalization")}
    if not values <= CONSENT_VALUES:
        raise _RefusedError(
            400,
            _google_error(
                400,
                "INVALID_ARGUMENT",
                [{"field": "consent", "reason": "REQUIRED_FIELD_MISSING"}],
            ),
        )


def _google_error(
    code: int, status: str, violations: list[dict[str, str]], quota_limit: str = ""
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": status,
        "domain": "datamanager.googleapis.com",
    }
    if quota_limit:
        info["metadata"] = {"quota_limit": quota_limit}
    details: list[dict[str, Any]] = [info]
    if violations:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": violations,
            }
        )
    return {
        "error": {
            "code": code,
            "message": "There was a problem with the request.",
            "status": status,
            "details": details,
        }
    }


# -- the server ------------------------------------------------------------


def _handler(platform: _Platform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = urlsplit(self.path).path
            headers: dict[str, str] = {}
            try:
                if isinstance(platform, LocalGoogle) and (
                    self.headers.get("Authorization") != f"Bearer {platform.token}"
                ):
                    raise _RefusedError(401, _google_error(401, "UNAUTHENTICATED", []))
                status, answer = platform.handle(self.command, path, body)
            except _RefusedError as exc:
                status, answer = exc.status, exc.body
                if status == 429:
                    headers["Retry-After"] = platform.retry_after
            except (ValueError, KeyError, TypeError, AttributeError):
                status, answer = 400, {"error": {"message": "malformed request"}}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_POST = _serve
        do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request line names audiences only, but stay quiet

    return Handler


@contextmanager
def serve(platform: LocalMeta | LocalGoogle) -> Iterator[str]:
    """Run `platform` on 127.0.0.1 (a free port) and yield its base URL."""
    server = ThreadingHTTPServer((HOST, 0), _handler(platform))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
