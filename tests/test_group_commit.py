"""Group commit of audited writes: the committer, then the store on both backends.

The committer alone, with a stand-in for the database: a lone caller commits
at once, groups are bounded and keep the queue's order, a failed or
interrupted group never leaves a caller hanging. The store: many writers
(on two stores sharing one database, like two gateways) share commits and
leave a log that verifies; a failing unit is refused alone; a writer killed
in the middle of a burst leaves a log that verifies.

Groups are made deterministic by holding the first unit of work until the
others are queued (`GroupCommitter.queued`), never by timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

import audit
from gateway import models
from gateway._group_commit import GroupCommitter, Unit
from gateway.checkpoints import CheckpointService
from gateway.errors import KeyReusedError, StoreError
from gateway.store import (
    ContactFields,
    ContactRef,
    ContactSnapshot,
    Reservation,
    Store,
    Verdict,
)

NOW = datetime(2026, 12, 8, 18, 30, tzinfo=UTC)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting until {what}")
        time.sleep(0.002)


# -- the committer alone ------------------------------------------------------


class _Database:
    """Stands in for the store: applies each unit and remembers each group;
    the commit of group N (from 0) raises ``failures[N]``, if given."""

    def __init__(self, failures: dict[int, BaseException] | None = None) -> None:
        self.groups: list[list[object]] = []
        self.failures = failures or {}

    def commit(self, group: Sequence[Unit[None, Any]]) -> None:
        applied: list[object] = []
        self.groups.append(applied)
        for unit in group:
            try:
                result = unit.work(None)
            except Exception as exc:
                unit.fail(exc)
            else:
                unit.succeed(result)
                applied.append(result)
        failure = self.failures.get(len(self.groups) - 1)
        if failure is not None:
            raise failure


def _held(release: threading.Event, result: object) -> Callable[[None], object]:
    def work(_: None) -> object:
        release.wait(30)
        return result

    return work


def _queue_behind_a_held_unit(
    committer: GroupCommitter[None],
    pool: ThreadPoolExecutor,
    works: Sequence[Callable[[None], object]],
) -> tuple[threading.Event, list[Future[object]]]:
    """Submit a unit that holds its group open, then `works` in this order."""
    release = threading.Event()
    futures = [pool.submit(committer.submit, _held(release, "held"))]
    _wait_until(lambda: committer.queued == 0, "the held unit leads")
    for count, work in enumerate(works, start=1):
        futures.append(pool.submit(committer.submit, work))
        _wait_until(lambda n=count: committer.queued == n, f"{count} units queue")
    return release, futures


def test_a_lone_caller_commits_at_once_in_a_group_of_its_own() -> None:
    database = _Database()
    committer = GroupCommitter(database.commit, limit=256)

    results = [committer.submit(lambda _, n=n: n) for n in range(3)]

    assert results == [0, 1, 2]
    assert database.groups == [[0], [1], [2]]


def test_groups_are_bounded_and_applied_in_queue_order() -> None:
    database = _Database()
    committer = GroupCommitter(database.commit, limit=4)
    with ThreadPoolExecutor(max_workers=12) as pool:
        release, futures = _queue_behind_a_held_unit(
            committer, pool, [lambda _, n=n: n for n in range(10)]
        )
        release.set()
        results = [f.result(timeout=30) for f in futures]

    assert results == ["held", *range(10)]
    assert database.groups == [["held"], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_group_that_fails_to_commit_fails_every_unit_in_it() -> None:
    database = _Database(failures={1: RuntimeError("disk full")})
    committer = GroupCommitter(database.commit, limit=256)
    with ThreadPoolExecutor(max_workers=4) as pool:
        release, futures = _queue_behind_a_held_unit(
            committer, pool, [lambda _: "a", lambda _: "b"]
        )
        release.set()
        assert futures[0].result(timeout=30) == "held"
        for future in futures[1:]:
            with pytest.raises(RuntimeError, match="disk full"):
                future.result(timeout=30)

    assert committer.submit(lambda _: "after") == "after"


def test_an_interrupted_leader_wakes_its_group_and_passes_the_lead() -> None:
    database = _Database(failures={1: KeyboardInterrupt()})
    committer = GroupCommitter(database.commit, limit=2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        release, futures = _queue_behind_a_held_unit(
            committer, pool, [lambda _: "leads", lambda _: "led", lambda _: "next"]
        )
        release.set()
        assert futures[0].result(timeout=30) == "held"
        with pytest.raises(KeyboardInterrupt):
            futures[1].result(timeout=30)
        with pytest.raises(StoreError, match=r"interrupted \(KeyboardInterrupt\)"):
            futures[2].result(timeout=30)
        assert futures[3].result(timeout=30) == "next"

    assert database.groups == [["held"], ["leads", "led"], ["next"]]


def test_a_unit_that_submits_another_is_refused_instead_of_waiting_forever() -> None:
    database = _Database()
    committer = GroupCommitter(database.commit, limit=256)

    with pytest.raises(RuntimeError, match="wait for its own group"):
        committer.submit(lambda _: committer.submit(lambda _: "inner"))

    assert committer.submit(lambda _: "after") == "after"


def test_a_group_needs_room_for_one_unit() -> None:
    with pytest.raises(ValueError, match="at least 1 unit"):
        GroupCommitter(_Database().commit, limit=0)


# -- the store, on both backends ------------------------------------------


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store.open(store_url)
    yield store
    store.close()


@contextmanager
def _commits(*stores: Store) -> Iterator[list[int]]:
    """Count the database commits the stores make inside the block."""
    count = [0]

    def counted(_connection: object) -> None:
        count[0] += 1

    for store in stores:
        sa.event.listen(store.engine, "commit", counted)
    try:
        yield count
    finally:
        for store in stores:
            sa.event.remove(store.engine, "commit", counted)


def _verdict(seq_seen: list[int] | None = None) -> Callable[..., Verdict]:
    def decide(snap: ContactSnapshot, seq: int) -> Verdict:
        if seq_seen is not None:
            seq_seen.append(seq)
        return Verdict(
            {"contact_id": snap.contact_id, "outcome": "ALLOW"},
            Reservation("sms", "marketing", "spring", NOW),
            {"audit_seq": seq},
        )

    return decide


def _held_decision(release: threading.Event) -> Callable[..., Verdict]:
    """A decision that waits for `release`, so the others queue behind it."""

    def decide(snap: ContactSnapshot, seq: int) -> Verdict:
        release.wait(30)
        return _verdict()(snap, seq)

    return decide


def _contact(store: Store, name: str) -> ContactRef:
    contact_id, _ = store.upsert_contact(ContactFields(name), NOW)
    return ContactRef(contact_id=contact_id)


def _decision_seqs(store: Store) -> tuple[list[int], list[int]]:
    """The seqs the decision rows name, and those of the decision records."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(models.DecisionRow.response)).scalars()
        answered = sorted(r["audit_seq"] for r in rows)
    audited = [r.seq for r in store.audit_records() if r.kind == "decision"]
    return answered, audited


def _log_verifies(store: Store) -> audit.ChainSummary:
    summary = audit.verify_chain(store.audit_records())
    assert store.audit_head() == (summary.head_seq, summary.head_hash)
    return summary


def test_concurrent_writers_share_commits_and_leave_a_log_that_verifies(
    store_url: str,
) -> None:
    gateways = [Store.open(store_url), Store.open(store_url, migrate=False)]
    writers, rounds = 8, 15
    refs = [_contact(gateways[0], f"w{w}") for w in range(writers)]

    def write(writer: int) -> list[int]:
        store = gateways[writer % 2]
        seqs = []
        for n in range(rounds):
            if n % 2:
                seqs.append(store.append_audit("event", {"n": n}))
            else:
                response, replayed, _ = store.decide(
                    refs[writer], NOW, f"w{writer}-{n}", "digest", _verdict()
                )
                assert not replayed
                seqs.append(response["audit_seq"])
        return seqs

    try:
        with _commits(*gateways) as commits, ThreadPoolExecutor(writers) as pool:
            seqs = [s for done in pool.map(write, range(writers)) for s in done]

        units = writers * rounds
        assert sorted(seqs) == list(range(1, units + 1))
        assert _log_verifies(gateways[1]).count == units
        answered, audited = _decision_seqs(gateways[0])
        assert answered == audited and len(audited) == writers * 8
        assert gateways[0].counts()["sends"] == writers * 8
        assert commits[0] < units

        signer, verifier = audit.generate_key("tollgate.local/audit")
        stored = CheckpointService(gateways[0], signer).sign_now()
        assert stored is not None
        checkpoint = audit.open_checkpoint(stored.note, verifier)
        assert checkpoint.size == units
        assert checkpoint.root_hash == audit.root(gateways[1].leaf_hashes())
    finally:
        for store in gateways:
            store.close()


def test_a_failing_unit_is_refused_alone_and_its_neighbours_commit(
    store: Store,
) -> None:
    ref = _contact(store, "c1")
    release = threading.Event()

    def refused(snap: ContactSnapshot, seq: int) -> Verdict:
        raise RuntimeError("policy evaluation failed")

    def unstorable(snap: ContactSnapshot, seq: int) -> Verdict:
        # fails when its rows are written, after its audit record was made
        return Verdict({"contact_id": snap.contact_id}, None, {"x": object()})

    seen: list[int] = []
    units: list[Callable[[], object]] = [
        lambda: store.append_audit("event", {"contact_id": "ct_1"}),
        lambda: store.append_audit("event", {"note": "+12125550123"}),
        lambda: store.decide(ref, NOW, "refused", "d", refused),
        lambda: store.decide(ref, NOW, "unstorable", "d", unstorable),
        lambda: store.decide(ref, NOW, "good", "d", _verdict(seen)),
    ]
    with _commits(store) as commits, ThreadPoolExecutor(6) as pool:
        first = pool.submit(
            store.decide, ref, NOW, "first", "d", _held_decision(release)
        )
        _wait_until(lambda: store.committer.queued == 0, "the first unit leads")
        futures = []
        for count, unit in enumerate(units, start=1):
            futures.append(pool.submit(unit))
            _wait_until(lambda n=count: store.committer.queued == n, "units queue")
        release.set()
        first.result(timeout=30)
        assert futures[0].result(timeout=30) == 2
        with pytest.raises(audit.PersonalDataError):
            futures[1].result(timeout=30)
        with pytest.raises(RuntimeError, match="policy evaluation failed"):
            futures[2].result(timeout=30)
        with pytest.raises((sa.exc.StatementError, TypeError)):
            futures[3].result(timeout=30)
        assert futures[4].result(timeout=30)[0] == {"audit_seq": 3}

    assert commits[0] == 2  # the held unit's group, then the five together
    assert seen == [3]  # the good decision followed the refused ones' seqs
    assert _log_verifies(store).count == 3
    assert _decision_seqs(store) == ([1, 3], [1, 3])
    assert store.counts()["sends"] == 2
    assert store.replayed("unstorable") is None


def test_one_key_twice_in_one_group_is_decided_once_then_replayed(
    store: Store,
) -> None:
    ref = _contact(store, "c1")
    release = threading.Event()

    with _commits(store) as commits, ThreadPoolExecutor(4) as pool:
        first = pool.submit(
            store.decide, ref, NOW, "first", "d", _held_decision(release)
        )
        _wait_until(lambda: store.committer.queued == 0, "the first unit leads")
        calls = [("k", "d"), ("k", "d"), ("k", "other request")]
        futures = []
        for count, (key, digest) in enumerate(calls, start=1):
            futures.append(pool.submit(store.decide, ref, NOW, key, digest, _verdict()))
            _wait_until(lambda n=count: store.committer.queued == n, "units queue")
        release.set()
        first.result(timeout=30)
        decided, replayed = (f.result(timeout=30) for f in futures[:2])
        with pytest.raises(KeyReusedError):
            futures[2].result(timeout=30)

    assert commits[0] == 2
    assert (decided[1], replayed[1]) == (False, True)
    assert decided[0] == replayed[0] == {"audit_seq": 2}
    assert _log_verifies(store).count == 2


_BURST = textwrap.dedent(
    """
    import sys, threading, time
    from datetime import UTC, datetime
    from gateway.store import ContactFields, ContactRef, Store, Verdict

    store = Store.open(sys.argv[1], migrate=False)
    now = datetime(2026, 12, 8, tzinfo=UTC)
    refs = [ContactRef(contact_id=store.upsert_contact(ContactFields(f"w{w}"), now)[0])
            for w in range(6)]
    stop = time.monotonic() + 60  # bounded, should the test not kill it

    def verdict(snap, seq):
        return Verdict({"contact_id": snap.contact_id}, None, {"audit_seq": seq})

    def write(w):
        n = 0
        while time.monotonic() < stop:
            n += 1
            if n % 2:
                store.append_audit("event", {"writer": w, "n": n})
            else:
                store.decide(refs[w], now, f"w{w}-{n}", "d", verdict)

    for w in range(6):
        threading.Thread(target=write, args=(w,)).start()
    """
)


def test_a_writer_killed_mid_burst_leaves_a_log_that_verifies(
    store: Store, store_url: str
) -> None:
    child = subprocess.Popen([sys.executable, "-c", _BURST, store_url])
    try:
        _wait_until(lambda: store.audit_head()[0] >= 400, "the burst writes")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    written = _log_verifies(store).count
    assert written >= 400
    answered, audited = _decision_seqs(store)
    assert answered == audited

    signer, _ = audit.generate_key("tollgate.local/audit")
    stored = CheckpointService(store, signer).sign_now()
    assert stored is not None and stored.size == written
    assert store.append_audit("event", {"after": "the crash"}) == written + 1
    assert _log_verifies(store).count == written + 1
