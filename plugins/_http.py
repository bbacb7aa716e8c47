"""The one HTTP exchange the ad-platform plugins share: a JSON answer, its
status and headers, and how long a rate-limited request should wait."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT = 30.0


class UnreachableError(Exception):
    """The platform could not be reached; `kind` names the network error."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def request_json(
    url: str, method: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, Mapping[str, str], Mapping[str, object]]:
    """Status, headers and JSON object of the answer (empty if not JSON)."""
    request = urllib.request.Request(
        url, data=body, method=method, headers=dict(headers)
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status: int = response.status
            answer_headers = dict(response.headers.items())
            raw: bytes = response.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, raw = exc.code, dict(exc.headers.items()), exc.read()
        exc.close()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnreachableError(type(reason).__name__) from exc
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        answer = {}
    return status, answer_headers, answer if isinstance(answer, Mapping) else {}


def retry_wait(header: str | None, default: float, cap: float) -> float:
    """Seconds to wait after a 429: the Retry-After header, bounded."""
    try:
        wait = float(header) if header is not None else default
    except ValueError:
        wait = default
    return min(max(wait, 0.0), cap)
