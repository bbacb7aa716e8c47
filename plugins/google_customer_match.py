"""The ``google`` ad platform: Customer Match through Google's Data Manager API.

Active only when ``TOLLGATE_PLUGIN_GOOGLE_BASE_URL`` is set
(``https://datamanager.googleapis.com`` in production, a loopback mock in the
tests), with ``..._GOOGLE_ACCESS_TOKEN`` (an OAuth access token for the
``datamanager`` scope), ``..._GOOGLE_OPERATING_ACCOUNT`` (the Google Ads
customer id owning the audiences) and ``..._GOOGLE_EEA`` (``true`` or
``false``, default ``false``). Members are added with
``POST /v1/audienceMembers:ingest`` and removed with
``POST /v1/audienceMembers:remove``
(https://developers.google.com/data-manager/api/reference/rest/v1/audienceMembers).

Invariants:

- Identifiers leave only as hex SHA-256 digests (``encoding: HEX``) of
  addresses normalised with Google's Gmail rules and of E.164 phone numbers
  with the plus sign
  (https://developers.google.com/data-manager/api/devguides/concepts/formatting).
- At most 10,000 audience members per request (limits page,
  https://developers.google.com/data-manager/api/devguides/limits, and the
  ``TOO_MANY_AUDIENCE_MEMBERS`` error reason).
- For an EEA audience every ingest request states the DMA consent
  ``adUserData`` and ``adPersonalization`` as ``CONSENT_GRANTED``: the gateway's
  policies only let contacts who gave that consent into an audience. The
  remove request has no consent field.
- Error texts and log lines hold contact ids, counts and Google's reasons,
  never an address, a number or a digest.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.hookspecs import (
    AudienceChange,
    AudienceMember,
    AudienceSyncResult,
    hookimpl,
)
from plugins._audience_ids import google_phone, hashed, normalise_email
from plugins._http import UnreachableError, request_json, retry_wait

log = logging.getLogger(__name__)

PLATFORM = "google"
INGEST_PATH = "/v1/audienceMembers:ingest"
REMOVE_PATH = "/v1/audienceMembers:remove"
ACCOUNT_TYPE = "GOOGLE_ADS"
MAX_MEMBERS_PER_REQUEST = 10_000  # see the module docstring
MAX_RETRIES = 3  # after the first attempt, for rate limits only
MAX_RETRY_WAIT = 60.0  # seconds; a longer Retry-After is capped
DEFAULT_RETRY_WAIT = 5.0  # when Google names no wait
# The Data Manager API fails a whole request when one member is invalid (its
# "fast-fail model", https://developers.google.com/data-manager/api/devguides/
# concepts/understand-errors) and names the member in a BadRequest field
# violation such as "audience_members.audience_members[0]"; nothing in that
# request was applied, so it is sent again without the named members.
MAX_RESENDS = 3
_MEMBER_INDEX = re.compile(r"audience_members\[(\d+)\]")
CONSENT_GRANTED = "CONSENT_GRANTED"


class _BatchError(Exception):
    """A request Google refused as a whole; the message holds no personal data."""


@dataclass
class _Outcome:
    applied: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    error: str = ""


class GoogleCustomerMatchPlugin:
    """Adds and removes Customer Match members through the Data Manager API."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._base_url = ""
        self._token = ""
        self._operating_account = ""
        self._eea = False
        self._sleep = sleep

    @hookimpl
    def tollgate_configure(self, settings: Mapping[str, str]) -> None:
        self._base_url = settings.get("google_base_url", "").strip().rstrip("/")
        self._token = settings.get("google_access_token", "")
        self._operating_account = settings.get("google_operating_account", "").strip()
        eea = settings.get("google_eea", "false").strip().lower() or "false"
        if eea not in ("true", "false"):
            raise ValueError(f"google_eea must be 'true' or 'false', got {eea!r}")
        self._eea = eea == "true"
        if not self._base_url:
            return
        if urlsplit(self._base_url).scheme not in ("http", "https"):
            raise ValueError(
                f"google_base_url must be an http or https URL, got {self._base_url!r}"
            )
        if not self._operating_account:
            raise ValueError(
                "google_operating_account is required with google_base_url: "
                "the Google Ads customer id that owns the audiences"
            )

    @hookimpl
    def tollgate_audience_platforms(self) -> Sequence[str]:
        return [PLATFORM] if self._base_url else []

    @hookimpl
    def tollgate_sync_audience(
        self, change: AudienceChange
    ) -> AudienceSyncResult | None:
        if change.platform != PLATFORM or not self._base_url:
            return None
        added = self._apply(change.audience_id, INGEST_PATH, change.add)
        removed = self._apply(change.audience_id, REMOVE_PATH, change.remove)
        failed = {**added.failed, **removed.failed}
        if (added.error or removed.error) and not (added.applied or removed.applied):
            return AudienceSyncResult(error=added.error or removed.error)
        log.info(
            "google: audience %s sync %r: %d added, %d removed, %d failed",
            change.audience_id,
            change.sync_id,
            added.applied,
            removed.applied,
            len(failed),
        )
        return AudienceSyncResult(
            added=added.applied, removed=removed.applied, failed=failed
        )

    def _apply(
        self, audience_id: str, path: str, members: Sequence[AudienceMember]
    ) -> _Outcome:
        """Send `members` in requests of at most 10,000; stop at a failure."""
        outcome = _Outcome()
        sendable: list[tuple[AudienceMember, list[dict[str, str]]]] = []
        for member in members:
            identifiers = _identifiers(member)
            if identifiers:
                sendable.append((member, identifiers))
            else:  # an empty member would fail the whole request
                outcome.failed[member.contact_id] = (
                    "google: no usable e-mail address or phone number"
                )
        for start in range(0, len(sendable), MAX_MEMBERS_PER_REQUEST):
            batch = sendable[start : start + MAX_MEMBERS_PER_REQUEST]
            try:
                applied, rejected = self._send_batch(audience_id, path, batch)
            except _BatchError as exc:
                outcome.error = str(exc)
                for member, _ in sendable[start:]:
                    outcome.failed[member.contact_id] = outcome.error
                log.warning(
                    "google: audience %s %s failed; %d members not applied: %s",
                    audience_id,
                    path.rpartition(":")[2],
                    len(sendable) - start,
                    outcome.error,
                )
                return outcome
            outcome.applied += applied
            outcome.failed.update(rejected)
        return outcome

    def _send_batch(
        self,
        audience_id: str,
        path: str,
        batch: list[tuple[AudienceMember, list[dict[str, str]]]],
    ) -> tuple[int, dict[str, str]]:
        """Send one batch; resend without members Google names as invalid."""
        rejected: dict[str, str] = {}
        for _ in range(MAX_RESENDS + 1):
            if not batch:
                return 0, rejected
            status, violations = self._send(audience_id, path, batch)
            if status == 200:
                return len(batch), rejected
            named = {i: reason for i, reason in violations if 0 <= i < len(batch)}
            if not named:
                raise _BatchError(
                    f"google: Data Manager API refused the request (HTTP {status}, "
                    f"{', '.join(reason for _, reason in violations) or 'no reason'})"
                )
            for index, reason in named.items():
                rejected[batch[index][0].contact_id] = f"google: rejected ({reason})"
            batch = [item for index, item in enumerate(batch) if index not in named]
        raise _BatchError(f"google: members still rejected after {MAX_RESENDS} resends")

    def _send(
        self,
        audience_id: str,
        path: str,
        batch: list[tuple[AudienceMember, list[dict[str, str]]]],
    ) -> tuple[int, list[tuple[int, str]]]:
        """One request, retried on rate limits: status and field violations."""
        body: dict[str, object] = {
            "destinations": [
                {
                    "operatingAccount": {
                        "accountType": ACCOUNT_TYPE,
                        "accountId": self._operating_account,
                    },
                    "productDestinationId": audience_id,
                }
            ],
            "audienceMembers": [
                {"userData": {"userIdentifiers": identifiers}}
                for _, identifiers in batch
            ],
            "encoding": "HEX",
        }
        if self._eea and path == INGEST_PATH:
            body["consent"] = {
                "adUserData": CONSENT_GRANTED,
                "adPersonalization": CONSENT_GRANTED,
            }
        data = json.dumps(body).encode()
        for attempt in range(MAX_RETRIES + 1):
            status, headers, answer = _request(self._base_url + path, data, self._token)
            if status == 200:
                return status, []
            details = _error_details(answer)
            if status == 429:
                if "PerDay" in details.quota_limit:
                    raise _BatchError(
                        "google: daily request quota exhausted "
                        f"({details.quota_limit}); retry after it resets"
                    )
                if attempt == MAX_RETRIES:
                    raise _BatchError(
                        f"google: still rate-limited after {MAX_RETRIES} retries"
                    )
                wait = _retry_wait(headers.get("Retry-After"))
                log.warning("google: rate-limited (HTTP 429); retrying in %.0f s", wait)
                self._sleep(wait)
                continue
            return status, details.violations
        raise AssertionError("unreachable: the loop returns or raises")


@dataclass
class _ErrorDetails:
    violations: list[tuple[int, str]] = field(default_factory=list)
    quota_limit: str = ""


def _identifiers(member: AudienceMember) -> list[dict[str, str]]:
    email = hashed(member.email, lambda value: normalise_email(value, True))
    phone = hashed(member.phone_e164, google_phone)
    identifiers = []
    if email:
        identifiers.append({"emailAddress": email})
    if phone:
        identifiers.append({"phoneNumber": phone})
    return identifiers


def _request(
    url: str, body: bytes, token: str
) -> tuple[int, Mapping[str, str], Mapping[str, object]]:
    """Status, headers and JSON answer; a network failure is a `_BatchError`."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        return request_json(url, "POST", body, headers)
    except UnreachableError as exc:
        raise _BatchError(f"google: Data Manager API unreachable ({exc.kind})") from exc


def _error_details(answer: Mapping[str, object]) -> _ErrorDetails:
    """Field violations (member index, reason) and the quota limit's name.

    Google's error model: ``error.details[]`` holds a ``google.rpc.BadRequest``
    with ``fieldViolations`` and a ``google.rpc.ErrorInfo`` whose
    ``metadata.quota_limit`` names the exhausted quota. Only the reason codes
    are kept; Google's descriptions are not copied into texts.
    """
    found = _ErrorDetails()
    error = answer.get("error")
    details = error.get("details") if isinstance(error, Mapping) else None
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, Mapping):
            continue
        metadata = detail.get("metadata")
        if isinstance(metadata, Mapping):
            found.quota_limit = str(metadata.get("quota_limit", ""))
        violations = detail.get("fieldViolations")
        for violation in violations if isinstance(violations, list) else []:
            if not isinstance(violation, Mapping):
                continue
            reason = str(violation.get("reason", "INVALID_ARGUMENT"))[:60]
            match = _MEMBER_INDEX.search(str(violation.get("field", "")))
            found.violations.append((int(match.group(1)) if match else -1, reason))
    return found


def _retry_wait(header: str | None) -> float:
    return retry_wait(header, DEFAULT_RETRY_WAIT, MAX_RETRY_WAIT)


plugin = GoogleCustomerMatchPlugin()
