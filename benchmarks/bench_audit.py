"""Audit write throughput, and the memory of signing and proving a large log.

Throughput: appends/s (`Store.append_audit`) and decisions/s (`Store.decide`,
one contact per writer, a trivial verdict: the store's cost, not the
policies') with 1 and 8 writer threads sharing one store, on SQLite and
PostgreSQL. Each run counts the database commits it made, so the figures show
how many writes one commit carried.

Memory: a SQLite log of `--records` records, then the peak Python memory
(tracemalloc) of signing a checkpoint over it, of signing the next one (the
consistency proof included), and of `tollgate audit prove`.

    .venv/bin/python benchmarks/bench_audit.py [--seconds 5] [--writers 1 8]
        [--backends sqlite postgres] [--records 200000] [--pg-url URL]

`--backends` with no name measures memory only; `--records 0` skips it.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

import audit
from gateway import models
from gateway.checkpoints import CheckpointService
from gateway.cli import main as cli
from gateway.store import ContactFields, ContactRef, Reservation, Store, Verdict

NOW = datetime(2026, 12, 8, 18, 30, tzinfo=UTC)
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def _fresh_store(backend: str, pg_url: str) -> Iterator[Store]:
    """A migrated, empty store; a temporary file or PostgreSQL schema."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            store = Store.open(f"sqlite:///{Path(folder) / 'bench.db'}")
            try:
                yield store
            finally:
                store.close()
        return
    admin = sa.create_engine(pg_url)
    schema = "bench_" + secrets.token_hex(4)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        store = Store.open(f"{pg_url}?options=-csearch_path%3D{schema}")
        try:
            yield store
        finally:
            store.close()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _appender(store: Store, writer: int) -> Callable[[int], None]:
    def append(n: int) -> None:
        store.append_audit("event", {"contact_id": f"ct_w{writer}", "n": n})

    return append


def _decider(store: Store, writer: int) -> Callable[[int], None]:
    contact_id, _ = store.upsert_contact(ContactFields(f"w{writer}"), NOW)
    ref = ContactRef(contact_id=contact_id)
    reservation = Reservation("sms", "marketing", "bench", NOW)

    def verdict(snap: object, seq: int) -> Verdict:
        body = {"contact_id": contact_id, "outcome": "ALLOW", "writer": writer}
        return Verdict(body, reservation, {"audit_seq": seq})

    def decide(n: int) -> None:
        store.decide(ref, NOW, f"w{writer}-{n}", "digest", verdict)

    return decide


def _throughput(store: Store, kind: str, writers: int, seconds: float) -> str:
    """Run `writers` threads for `seconds`; return a line of figures."""
    make = _appender if kind == "appends" else _decider
    jobs = [make(store, w) for w in range(writers)]
    done = [0] * writers
    commits = [0]
    start = threading.Barrier(writers + 1)

    def count_commit(_connection: object) -> None:
        commits[0] += 1

    def work(writer: int) -> None:
        start.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            jobs[writer](done[writer])
            done[writer] += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    sa.event.listen(store.engine, "commit", count_commit)
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    sa.event.remove(store.engine, "commit", count_commit)
    total = sum(done)
    verified = audit.verify_chain(store.audit_records()).count
    if verified != total:
        raise SystemExit(f"{kind}: {total} writes but {verified} records verify")
    return (
        f"{kind:<9} {writers} writer{'s' if writers > 1 else ' '} "
        f"{total / elapsed:8.0f}/s   {total:6d} writes in {commits[0]:6d} commits "
        f"({total / max(commits[0], 1):5.1f} per commit)"
    )


def _fill(store: Store, records: int) -> None:
    """Write `records` chained records straight into the tables, fast."""
    prev: audit.AuditRecord | None = None
    with store.engine.begin() as conn:
        for first in range(0, records, 5000):
            rows = []
            for n in range(first, min(first + 5000, records)):
                body = {"contact_id": f"ct_{n % 997}", "outcome": "ALLOW", "n": n}
                prev = audit.make_record(prev, "decision", body, _stamp(n))
                rows.append(
                    {
                        "seq": prev.seq,
                        "recorded_at": prev.recorded_at,
                        "kind": prev.kind,
                        "body": audit.canonical_json(dict(prev.body)).decode(),
                        "prev_hash": prev.prev_hash,
                        "hash": prev.hash,
                        "salt": prev.salt,
                    }
                )
            conn.execute(sa.insert(models.AuditRow), rows)
        assert prev is not None
        conn.execute(
            sa.update(models.AuditHead)
            .where(models.AuditHead.id == 1)
            .values(seq=prev.seq, hash=prev.hash)
        )


def _stamp(n: int) -> str:
    return (NOW + timedelta(milliseconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _measure(what: str, action: Callable[[], object]) -> None:
    """Print the time of `action`, then run it again for its peak memory."""
    began = time.perf_counter()
    action()
    elapsed = time.perf_counter() - began
    tracemalloc.start()
    action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{what:<44} {elapsed:6.2f} s   peak {peak / 2**20:7.2f} MiB")


def _memory(records: int) -> None:
    print(f"\nsigning and proving a SQLite log of {records} records")
    signer, _ = audit.generate_key("bench.local/audit")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        store = Store.open(url)
        try:
            _fill(store, records - 2)
            CheckpointService(store, signer).sign_now()

            def sign() -> None:
                store.append_audit("event", {"contact_id": "ct_bench"})
                CheckpointService(store, signer).sign_now()

            _measure("sign the next checkpoint (1 record more)", sign)
            out = Path(folder) / "proof.json"
            args = ["audit", "prove", str(records // 3), "--out", str(out)]

            def prove() -> None:
                result = CliRunner().invoke(cli, [*args, "--db", url])
                if result.exit_code:
                    raise SystemExit(f"prove failed: {result.output}")

            _measure(f"tollgate audit prove {records // 3}", prove)
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--backends",
        nargs="*",
        default=["sqlite", "postgres"],
        choices=["sqlite", "postgres"],
    )
    parser.add_argument("--pg-url", default=PG_URL)
    args = parser.parse_args()
    for backend in args.backends:
        print(f"{backend}, {args.seconds:g} s per run")
        for kind in ("appends", "decisions"):
            for writers in args.writers:
                with _fresh_store(backend, args.pg_url) as store:
                    print("  " + _throughput(store, kind, writers, args.seconds))
    if args.records:
        _memory(args.records)


if __name__ == "__main__":
    main()
