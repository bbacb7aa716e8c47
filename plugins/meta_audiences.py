"""The ``meta`` ad platform: Custom Audiences through Meta's Marketing API.

Active only when ``TOLLGATE_PLUGIN_META_BASE_URL`` is set (the Graph API root,
``https://graph.facebook.com`` in production, a loopback mock in the tests),
with ``..._META_ACCESS_TOKEN`` and ``..._META_API_VERSION`` (default
``v21.0``). Members are added with ``POST /<version>/<audience_id>/users`` and
removed with ``DELETE`` on the same edge and the same payload
(https://developers.facebook.com/docs/marketing-api/reference/custom-audience/users).

Invariants:

- Only SHA-256 digests leave the process: schema ``EMAIL_SHA256``,
  ``PHONE_SHA256``; an identifier a member lacks is ``""`` and the row is still
  sent (field case AH-05).
- At most 10,000 rows per request ("only a maximum of 10000 at a time", same
  page); a larger change is one upload session of several batches.
- Error texts and log lines name contact ids, counts and Meta's error codes,
  never an address, a number or a digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

from gateway.hookspecs import (
    AudienceChange,
    AudienceMember,
    AudienceSyncResult,
    hookimpl,
)
from plugins._audience_ids import hashed, meta_phone, normalise_email
from plugins._http import UnreachableError, request_json, retry_wait

log = logging.getLogger(__name__)

PLATFORM = "meta"
DEFAULT_API_VERSION = "v21.0"
SCHEMA = ("EMAIL_SHA256", "PHONE_SHA256")
# "You can add an unlimited number of records for an audience, but only a
# maximum of 10000 at a time" (Custom Audience Users reference, cited above).
MAX_ROWS_PER_REQUEST = 10_000
MAX_RETRIES = 3  # after the first attempt, for rate limits only
MAX_RETRY_WAIT = 60.0  # seconds; a longer Retry-After is capped
DEFAULT_RETRY_WAIT = 5.0  # when Meta names no wait
# Graph API error codes for throttling: 4 (application request limit), 17 (user
# request limit), 613 (too many calls from this ad account), see
# https://developers.facebook.com/docs/marketing-api/overview/rate-limiting
# and the error reference; 80004 (too many calls to this ad account) is listed
# on the custom-audience edges' error tables.
RATE_LIMIT_CODES = frozenset({4, 17, 613, 80004})
# Meta refuses removals that would leave a Custom Audience too small; its
# message reads "Audience Size too low: You cannot remove users from this
# audience because it will result in a low audience size." (quoted in
# https://github.com/grouparoo/grouparoo/pull/1108). No code or subcode for it
# is documented, so the text is matched.
TOO_SMALL_MARKER = "audience size too low"


class _BatchError(Exception):
    """A batch Meta refused as a whole; the message holds no personal data."""


@dataclass
class _Outcome:
    applied: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    error: str = ""  # set when a batch failed as a whole


class MetaAudiencesPlugin:
    """Adds and removes Custom Audience members through the Graph API."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._base_url = ""
        self._token = ""
        self._version = DEFAULT_API_VERSION
        self._sleep = sleep

    @hookimpl
    def tollgate_configure(self, settings: Mapping[str, str]) -> None:
        self._base_url = settings.get("meta_base_url", "").strip().rstrip("/")
        self._token = settings.get("meta_access_token", "")
        self._version = settings.get("meta_api_version", "") or DEFAULT_API_VERSION
        if self._base_url and urlsplit(self._base_url).scheme not in (
            "http",
            "https",
        ):
            raise ValueError(
                f"meta_base_url must be an http or https URL, got {self._base_url!r}"
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
        added = self._apply(change, "POST", change.add)
        removed = self._apply(change, "DELETE", change.remove)
        failed = {**added.failed, **removed.failed}
        if (added.error or removed.error) and not (added.applied or removed.applied):
            return AudienceSyncResult(error=added.error or removed.error)
        log.info(
            "meta: audience %s sync %r: %d added, %d removed, %d failed",
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
        self, change: AudienceChange, method: str, members: Sequence[AudienceMember]
    ) -> _Outcome:
        """Send `members` in batches of one upload session; stop at a failure."""
        outcome = _Outcome()
        if not members:
            return outcome
        rows = [_row(member) for member in members]
        session_id = _session_id(change, method)
        batches = range(0, len(rows), MAX_ROWS_PER_REQUEST)
        for seq, start in enumerate(batches, start=1):
            end = start + MAX_ROWS_PER_REQUEST
            session = {
                "session_id": session_id,
                "batch_seq": seq,
                "last_batch_flag": end >= len(rows),
                "estimated_num_total": len(rows),
            }
            try:
                answer = self._send(
                    change.audience_id, method, rows[start:end], session
                )
            except _BatchError as exc:
                reason = str(exc)
                outcome.error = reason
                for member in members[start:]:
                    outcome.failed[member.contact_id] = reason
                log.warning(
                    "meta: audience %s %s batch %d failed; %d members not applied: %s",
                    change.audience_id,
                    method,
                    seq,
                    len(members) - start,
                    reason,
                )
                return outcome
            invalid = _invalid_rows(answer, members[start:end], rows[start:end])
            outcome.failed.update(invalid)
            unnamed = max(0, _count(answer, "num_invalid_entries") - len(invalid))
            if unnamed:
                log.warning(
                    "meta: audience %s batch %d: %d invalid rows Meta did not name",
                    change.audience_id,
                    seq,
                    unnamed,
                )
            outcome.applied += len(rows[start:end]) - len(invalid) - unnamed
        return outcome

    def _send(
        self,
        audience_id: str,
        method: str,
        rows: list[list[str]],
        session: Mapping[str, object],
    ) -> Mapping[str, object]:
        """One request, retried on throttling; raises `_BatchError`."""
        url = (
            f"{self._base_url}/{quote(self._version, safe='')}/"
            f"{quote(audience_id, safe='')}/users"
        )
        body = urlencode(
            {
                "payload": json.dumps({"schema": list(SCHEMA), "data": rows}),
                "session": json.dumps(session),
                "access_token": self._token,
            }
        ).encode()
        for attempt in range(MAX_RETRIES + 1):
            status, headers, answer = _request(url, method, body)
            error = answer.get("error")
            if status == 200 and not isinstance(error, Mapping):
                return answer
            code = _count(error, "code") if isinstance(error, Mapping) else 0
            if status == 429 or code in RATE_LIMIT_CODES:
                if attempt == MAX_RETRIES:
                    raise _BatchError(
                        f"meta: still rate-limited after {MAX_RETRIES} retries "
                        f"(HTTP {status}, code {code})"
                    )
                wait = _retry_wait(headers.get("Retry-After"))
                log.warning(
                    "meta: rate-limited (HTTP %d, code %d); retrying in %.0f s",
                    status,
                    code,
                    wait,
                )
                self._sleep(wait)
                continue
            raise _BatchError(_describe_error(status, error, method))
        raise AssertionError("unreachable: the loop returns or raises")


def _row(member: AudienceMember) -> list[str]:
    """The member's row under `SCHEMA`; ``""`` for a missing identifier."""
    email = hashed(member.email, lambda value: normalise_email(value, False))
    return [email, hashed(member.phone_e164, meta_phone)]


def _session_id(change: AudienceChange, method: str) -> int:
    """A positive 63-bit session id, the same for a retry of the same sync."""
    if not change.sync_id:
        return secrets.randbits(62) + 1
    seed = f"{change.audience_id}\n{change.sync_id}\n{method}".encode()
    return int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") >> 1 or 1


def _request(
    url: str, method: str, body: bytes
) -> tuple[int, Mapping[str, str], Mapping[str, object]]:
    """Status, headers and JSON answer; a network failure is a `_BatchError`."""
    try:
        return request_json(
            url, method, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
    except UnreachableError as exc:
        raise _BatchError(f"meta: Graph API unreachable ({exc.kind})") from exc


def _retry_wait(header: str | None) -> float:
    return retry_wait(header, DEFAULT_RETRY_WAIT, MAX_RETRY_WAIT)


def _describe_error(status: int, error: object, method: str) -> str:
    """Meta's refusal in words, from its codes and titles only."""
    if not isinstance(error, Mapping):
        return f"meta: Graph API answered HTTP {status}, expected 200"
    text = " ".join(
        str(error.get(key, "")) for key in ("message", "error_user_title")
    ).lower()
    if method == "DELETE" and TOO_SMALL_MARKER in text:
        return (
            "meta: removal refused, the audience is too small to remove from "
            "(Meta keeps a minimum audience size); remove later or replace it"
        )
    code, subcode = _count(error, "code"), _count(error, "error_subcode")
    return (
        f"meta: Graph API refused the batch (HTTP {status}, code {code}, "
        f"subcode {subcode})"
    )


def _invalid_rows(
    answer: Mapping[str, object],
    members: Sequence[AudienceMember],
    rows: list[list[str]],
) -> dict[str, str]:
    """Contact ids of the rows Meta sampled as invalid in its answer.

    Meta returns ``num_invalid_entries`` and ``invalid_entry_samples`` (seen as
    a list or a mapping of the offending values); a sample is traced back to
    the row holding that value.
    """
    samples = answer.get("invalid_entry_samples")
    if isinstance(samples, Mapping):
        values = {str(key).lower() for key in samples}
    elif isinstance(samples, list):
        values = {str(item).lower() for item in samples}
    else:
        return {}
    return {
        member.contact_id: "meta: row rejected as invalid"
        for member, row in zip(members, rows, strict=True)
        if any(value and value in values for value in row)
    }


def _count(answer: object, key: str) -> int:
    if not isinstance(answer, Mapping):
        return 0
    try:
        return int(answer.get(key) or 0)
    except (TypeError, ValueError):
        return 0


plugin = MetaAudiencesPlugin()
