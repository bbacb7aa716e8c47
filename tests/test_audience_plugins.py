"""The meta and google audience plugins against loopback stand-ins of their APIs.

gateway/ad_platforms_local.py checks each request against the documented
shape and keeps the digests it accepted; these tests check what landed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from importlib import metadata

import pytest

from gateway import hookspecs
from gateway.ad_platforms_local import LocalGoogle, LocalMeta, serve
from gateway.hookspecs import AudienceChange, AudienceMember
from plugins._audience_ids import sha256_hex
from plugins.google_customer_match import GoogleCustomerMatchPlugin
from plugins.meta_audiences import MetaAudiencesPlugin

TOKEN = "test-token"
ACCOUNT = "1234567890"
ALICE = AudienceMember("c-alice", " Alice.Smith+ads@Gmail.com ", "+1 (800) 555-0102")
BOB = AudienceMember("c-bob", "bob@example.com", None)
CAROL = AudienceMember("c-carol", None, "+44 20 7123 4567")


def _members(count: int) -> list[AudienceMember]:
    return [
        AudienceMember(f"c{n}", f"user{n}@example.com", f"+1800{n:07d}")
        for n in range(count)
    ]


def _no_personal_data(text: str) -> None:
    assert "@" not in text
    assert not re.search(r"\d{6,}", text), text


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def meta_mock() -> LocalMeta:
    return LocalMeta(token=TOKEN)


@pytest.fixture
def meta(meta_mock: LocalMeta, sleeps: list[float]) -> Iterator[MetaAudiencesPlugin]:
    plugin = MetaAudiencesPlugin(sleep=sleeps.append)
    with serve(meta_mock) as url:
        plugin.tollgate_configure({"meta_base_url": url, "meta_access_token": TOKEN})
        yield plugin


@pytest.fixture
def google_mock() -> LocalGoogle:
    return LocalGoogle(token=TOKEN, operating_account=ACCOUNT, require_consent=True)


@pytest.fixture
def google(
    google_mock: LocalGoogle, sleeps: list[float]
) -> Iterator[GoogleCustomerMatchPlugin]:
    plugin = GoogleCustomerMatchPlugin(sleep=sleeps.append)
    with serve(google_mock) as url:
        plugin.tollgate_configure(
            {
                "google_base_url": url,
                "google_access_token": TOKEN,
                "google_operating_account": ACCOUNT,
                "google_eea": "true",
            }
        )
        yield plugin


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- registration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "platform"),
    [
        ("plugins.meta_audiences:plugin", "meta"),
        ("plugins.google_customer_match:plugin", "google"),
    ],
)
def test_registered_through_the_entry_point_group(value: str, platform: str) -> None:
    points = {p.value: p for p in metadata.entry_points(group=hookspecs.PROJECT_NAME)}
    assert value in points
    plugin = points[value].load()
    plugin.tollgate_configure(
        {f"{platform}_base_url": "http://127.0.0.1:9"}
        | ({"google_operating_account": ACCOUNT} if platform == "google" else {})
    )
    assert plugin.tollgate_audience_platforms() == [platform]
    plugin.tollgate_configure({})
    assert plugin.tollgate_audience_platforms() == []


def test_unconfigured_plugins_answer_for_no_platform() -> None:
    change = AudienceChange("meta", "42", add=[BOB])
    assert MetaAudiencesPlugin().tollgate_sync_audience(change) is None
    change = AudienceChange("google", "42", add=[BOB])
    assert GoogleCustomerMatchPlugin().tollgate_sync_audience(change) is None


def test_other_platforms_are_not_answered(
    meta: MetaAudiencesPlugin, google: GoogleCustomerMatchPlugin
) -> None:
    assert meta.tollgate_sync_audience(AudienceChange("google", "1", add=[BOB])) is None
    assert google.tollgate_sync_audience(AudienceChange("meta", "1", add=[BOB])) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"google_base_url": "ftp://127.0.0.1", "google_operating_account": ACCOUNT},
        {"google_base_url": "http://127.0.0.1:9"},
        {"google_eea": "maybe"},
    ],
    ids=["bad-scheme", "no-operating-account", "bad-eea"],
)
def test_google_refuses_bad_settings(settings: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="google_"):
        GoogleCustomerMatchPlugin().tollgate_configure(settings)


# -- meta --------------------------------------------------------------------


def test_meta_adds_and_removes_with_metas_hashes(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta
) -> None:
    result = meta.tollgate_sync_audience(
        AudienceChange("meta", "aud1", add=[ALICE, BOB, CAROL])
    )
    assert result == hookspecs.AudienceSyncResult(added=3)
    assert meta_mock.audiences["aud1"] == {
        sha256_hex("alice.smith+ads@gmail.com"),  # Meta: no Gmail rules
        sha256_hex("18005550102"),  # Meta: digits, country code, no plus
        sha256_hex("bob@example.com"),
        sha256_hex("442071234567"),
    }

    result = meta.tollgate_sync_audience(AudienceChange("meta", "aud1", remove=[BOB]))
    assert result == hookspecs.AudienceSyncResult(removed=1)
    assert sha256_hex("bob@example.com") not in meta_mock.audiences["aud1"]
    assert [r["method"] for r in meta_mock.requests] == ["POST", "DELETE"]


def test_meta_25001_members_go_in_3_batches_of_one_session(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta
) -> None:
    result = meta.tollgate_sync_audience(
        AudienceChange("meta", "big", add=_members(25_001), sync_id="s1")
    )

    assert result == hookspecs.AudienceSyncResult(added=25_001)
    sessions = [r["session"] for r in meta_mock.requests]
    assert [r["rows"] for r in meta_mock.requests] == [10_000, 10_000, 5_001]
    assert len({s["session_id"] for s in sessions}) == 1
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert {s["estimated_num_total"] for s in sessions} == {25_001}
    assert len(meta_mock.audiences["big"]) == 2 * 25_001


def test_meta_waits_retry_after_on_429_then_succeeds(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta, sleeps: list[float]
) -> None:
    meta_mock.rate_limited = 1
    result = meta.tollgate_sync_audience(AudienceChange("meta", "a", add=[BOB]))
    assert result == hookspecs.AudienceSyncResult(added=1)
    assert sleeps == [1.0]
    assert len(meta_mock.requests) == 2


def test_meta_gives_up_after_3_retries(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta, sleeps: list[float]
) -> None:
    meta_mock.rate_limited = 10
    result = meta.tollgate_sync_audience(AudienceChange("meta", "a", add=[BOB]))
    assert result is not None
    assert "rate-limited after 3 retries" in result.error
    assert sleeps == [1.0, 1.0, 1.0]
    assert len(meta_mock.requests) == 4


def test_meta_partial_failure_is_reported_per_contact(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta
) -> None:
    meta_mock.reject = {sha256_hex("bob@example.com")}
    result = meta.tollgate_sync_audience(
        AudienceChange("meta", "a", add=[ALICE, BOB, CAROL])
    )
    assert result is not None
    assert result.added == 2
    assert set(result.failed) == {"c-bob"}
    _no_personal_data(result.failed["c-bob"])


def test_meta_too_small_audience_is_a_clear_removal_error(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta
) -> None:
    meta_mock.too_small_on_delete = True
    result = meta.tollgate_sync_audience(AudienceChange("meta", "a", remove=[BOB]))
    assert result is not None
    assert "too small to remove from" in result.error
    assert (result.added, result.removed) == (0, 0)


def test_meta_too_small_keeps_the_adds_and_fails_the_removals(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta
) -> None:
    meta_mock.too_small_on_delete = True
    result = meta.tollgate_sync_audience(
        AudienceChange("meta", "a", add=[ALICE], remove=[BOB, CAROL])
    )
    assert result is not None
    assert (result.added, result.removed, result.error) == (1, 0, "")
    assert set(result.failed) == {"c-bob", "c-carol"}
    assert "too small to remove from" in result.failed["c-bob"]


def test_meta_network_down_is_an_error_without_personal_data(
    meta_mock: LocalMeta,
) -> None:
    plugin = MetaAudiencesPlugin(sleep=lambda _: None)
    plugin.tollgate_configure({"meta_base_url": _closed_port_url()})
    result = plugin.tollgate_sync_audience(
        AudienceChange("meta", "a", add=[ALICE, BOB], remove=[CAROL])
    )
    assert result is not None
    assert "unreachable" in result.error
    _no_personal_data(result.error)


def test_meta_logs_no_identifiers(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta, caplog: pytest.LogCaptureFixture
) -> None:
    meta_mock.rate_limited = 1
    meta_mock.reject = {sha256_hex("bob@example.com")}
    with caplog.at_level("DEBUG"):
        meta.tollgate_sync_audience(AudienceChange("meta", "a", add=[ALICE, BOB]))
    for record in caplog.records:
        _no_personal_data(record.getMessage())
        assert sha256_hex("bob@example.com") not in record.getMessage()


# -- google ------------------------------------------------------------------


def test_google_adds_and_removes_with_googles_hashes(
    google: GoogleCustomerMatchPlugin, google_mock: LocalGoogle
) -> None:
    result = google.tollgate_sync_audience(
        AudienceChange("google", "list1", add=[ALICE, BOB, CAROL])
    )
    assert result == hookspecs.AudienceSyncResult(added=3)
    assert google_mock.audiences["list1"] == {
        sha256_hex("alicesmith@gmail.com"),  # Gmail: dots and +tag removed
        sha256_hex("+18005550102"),  # E.164 with the plus sign
        sha256_hex("bob@example.com"),
        sha256_hex("+442071234567"),
    }
    assert google_mock.requests[0]["consent"] == {
        "adUserData": "CONSENT_GRANTED",
        "adPersonalization": "CONSENT_GRANTED",
    }

    result = google.tollgate_sync_audience(
        AudienceChange("google", "list1", remove=[ALICE])
    )
    assert result == hookspecs.AudienceSyncResult(removed=1)
    assert google_mock.audiences["list1"] == {
        sha256_hex("bob@example.com"),
        sha256_hex("+442071234567"),
    }
    assert google_mock.requests[1]["operation"] == "remove"
    assert google_mock.requests[1]["consent"] is None


def test_google_outside_the_eea_sends_no_consent(google_mock: LocalGoogle) -> None:
    google_mock.require_consent = False
    plugin = GoogleCustomerMatchPlugin()
    with serve(google_mock) as url:
        plugin.tollgate_configure(
            {
                "google_base_url": url,
                "google_access_token": TOKEN,
                "google_operating_account": ACCOUNT,
                "google_eea": "false",
            }
        )
        result = plugin.tollgate_sync_audience(AudienceChange("google", "l", add=[BOB]))
    assert result == hookspecs.AudienceSyncResult(added=1)
    assert google_mock.requests[0]["consent"] is None


def test_google_splits_at_10000_members(
    google: GoogleCustomerMatchPlugin, google_mock: LocalGoogle
) -> None:
    result = google.tollgate_sync_audience(
        AudienceChange("google", "big", add=_members(20_001))
    )
    assert result == hookspecs.AudienceSyncResult(added=20_001)
    assert [r["members"] for r in google_mock.requests] == [10_000, 10_000, 1]


def test_google_waits_retry_after_on_429_then_succeeds(
    google: GoogleCustomerMatchPlugin, google_mock: LocalGoogle, sleeps: list[float]
) -> None:
    google_mock.rate_limited = 1
    result = google.tollgate_sync_audience(AudienceChange("google", "l", add=[BOB]))
    assert result == hookspecs.AudienceSyncResult(added=1)
    assert sleeps == [1.0]


def test_google_daily_quota_is_not_retried(
    google: GoogleCustomerMatchPlugin, google_mock: LocalGoogle, sleeps: list[float]
) -> None:
    google_mock.daily_quota_once = True
    result = google.tollgate_sync_audience(AudienceChange("google", "l", add=[BOB]))
    assert result is not None
    assert "daily request quota" in result.error
    assert sleeps == []


def test_google_partial_failure_is_reported_per_contact_and_the_rest_applied(
    google: GoogleCustomerMatchPlugin, google_mock: LocalGoogle
) -> None:
    google_mock.reject = {sha256_hex("bob@example.com")}
    result = google.tollgate_sync_audience(
        AudienceChange("google", "l", add=[ALICE, BOB, CAROL])
    )
    assert result is not None
    assert result.added == 2
    assert set(result.failed) == {"c-bob"}
    assert "INVALID_SHA256_FORMAT" in result.failed["c-bob"]
    _no_personal_data(result.failed["c-bob"])
    assert sha256_hex("+442071234567") in google_mock.audiences["l"]


def test_google_member_without_identifiers_fails_alone(
    google: GoogleCustomerMatchPlugin, google_mock: LocalGoogle
) -> None:
    nobody = AudienceMember("c-none", "not-an-address", "+0000000000")
    result = google.tollgate_sync_audience(
        AudienceChange("google", "l", add=[nobody, BOB])
    )
    assert result is not None
    assert (result.added, set(result.failed)) == (1, {"c-none"})


def test_google_network_down_is_an_error_without_personal_data() -> None:
    plugin = GoogleCustomerMatchPlugin(sleep=lambda _: None)
    plugin.tollgate_configure(
        {"google_base_url": _closed_port_url(), "google_operating_account": ACCOUNT}
    )
    result = plugin.tollgate_sync_audience(
        AudienceChange("google", "l", add=[ALICE, BOB], remove=[CAROL])
    )
    assert result is not None
    assert "unreachable" in result.error
    _no_personal_data(result.error)


def test_a_long_retry_after_is_capped(
    meta: MetaAudiencesPlugin, meta_mock: LocalMeta, sleeps: list[float]
) -> None:
    meta_mock.rate_limited, meta_mock.retry_after = 1, "3600"
    result = meta.tollgate_sync_audience(AudienceChange("meta", "a", add=[BOB]))
    assert result == hookspecs.AudienceSyncResult(added=1)
    assert sleeps == [60.0]
