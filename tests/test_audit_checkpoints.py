"""Signed checkpoints of the gateway's audit log, on both store backends.

A checkpoint commits the log to its first N records: the signer refuses, and
``tollgate audit verify --key`` fails, once those records were rewritten or
cut from the end; exports and single-record proofs verify offline.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import audit
from gateway.checkpoints import CheckpointService, PeriodicSigner
from gateway.cli import main
from gateway.service import Gateway, SendInput
from gateway.store import Store
from support import AT, GatewayFactory, add_contact

ORIGIN = "tollgate.local/audit"


@dataclass(frozen=True)
class Keys:
    signer: str
    verifier: str
    key_file: Path
    pub_file: Path


def _keys(folder: Path, name: str = ORIGIN) -> Keys:
    signer, verifier = audit.generate_key(name)
    folder.mkdir(parents=True, exist_ok=True)
    key_file, pub_file = folder / "log.key", folder / "log.pub"
    key_file.write_text(signer + "\n")
    pub_file.write_text(verifier + "\n")
    return Keys(signer, verifier, key_file, pub_file)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return _keys(tmp_path / "keys")


def _campaign(gateway: Gateway, first: int, n: int) -> None:
    """n contacts, each: consent, decision, delivery (3 audit records)."""
    for i in range(first, first + n):
        ref = add_contact(gateway, f"c{i}", phone=f"+1212555{100 + i:04d}")
        gateway.send(
            SendInput(
                contact=ref,
                channel="sms",
                purpose="marketing",
                campaign="spring",
                body="hello",
                idempotency_key=f"k{i}",
                at=AT,
            )
        )


@pytest.fixture
def audited(make_gateway: GatewayFactory, store_url: str) -> tuple[Gateway, str]:
    gateway = make_gateway(store_url)
    _campaign(gateway, 0, 3)  # 9 records
    return gateway, store_url


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _exec(store: Store, sql: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _rewrite_from(store: Store, seq: int) -> None:
    """Edit record `seq`'s body and re-hash the chain from it on, fixing the
    head: a rewrite the hash chain alone cannot see."""
    records = list(store.audit_records())
    prev = records[seq - 2] if seq > 1 else None
    for record in records[seq - 1 :]:
        body = dict(record.body)
        if record.seq == seq:
            body["channel"] = "email"
        made = audit.make_record(prev, record.kind, body, record.recorded_at)
        _exec(
            store,
            "UPDATE audit_records SET body = :body, prev_hash = :prev, hash = :hash, "
            "salt = :salt WHERE seq = :seq",
            body=audit.canonical_json(dict(made.body)).decode(),
            prev=made.prev_hash,
            hash=made.hash,
            salt=made.salt,
            seq=made.seq,
        )
        prev = made
    assert prev is not None
    _exec(store, "UPDATE audit_head SET hash = :hash WHERE id = 1", hash=prev.hash)


def _truncate_to(store: Store, size: int) -> None:
    """Delete the records after `size` and point the head at record `size`."""
    _exec(store, "DELETE FROM audit_records WHERE seq > :size", size=size)
    _exec(
        store,
        "UPDATE audit_head SET seq = :size, hash = "
        "(SELECT hash FROM audit_records WHERE seq = :size) WHERE id = 1",
        size=size,
    )


# -- signing ---------------------------------------------------------------


def test_checkpoint_is_signed_and_verifies_with_the_public_key(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    store = audited[0].store
    stored = CheckpointService(store, keys.signer).sign_now()

    assert stored is not None and stored.key_name == ORIGIN
    checkpoint = audit.open_checkpoint(stored.note, keys.verifier)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 9)
    assert checkpoint.root_hash == audit.root(store.leaf_hashes())
    assert store.latest_checkpoint() == stored


def test_second_checkpoint_is_consistent_with_the_first(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    gateway = audited[0]
    service = CheckpointService(gateway.store, keys.signer)
    first = service.sign_now()
    _campaign(gateway, 3, 2)
    second = service.sign_now()

    assert first is not None and second is not None
    old = audit.open_checkpoint(first.note, keys.verifier)
    new = audit.open_checkpoint(second.note, keys.verifier)
    assert (old.size, new.size) == (9, 15)
    proof = audit.consistency_proof(list(gateway.store.leaf_hashes()), old.size)
    audit.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)


def test_nothing_is_signed_when_the_log_did_not_grow(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    service = CheckpointService(audited[0].store, keys.signer)
    assert service.sign_now() is not None
    assert service.sign_now() is None


def test_a_new_key_signs_on_consistently_after_rotation(
    audited: tuple[Gateway, str], keys: Keys, tmp_path: Path
) -> None:
    gateway = audited[0]
    old = CheckpointService(gateway.store, keys.signer).sign_now()
    _campaign(gateway, 3, 1)
    new_keys = _keys(tmp_path / "new", "tollgate.local/audit-2027")
    new = CheckpointService(gateway.store, new_keys.signer).sign_now()

    assert old is not None and new is not None
    assert new.key_name == "tollgate.local/audit-2027"
    audit.open_checkpoint(old.note, keys.verifier)
    with pytest.raises(audit.SignatureError):
        audit.open_checkpoint(new.note, keys.verifier)
    assert audit.open_checkpoint(new.note, new_keys.verifier).size == 12


# -- tampering below a checkpoint --------------------------------------------


def test_rewritten_records_below_the_checkpoint_refuse_signing(
    audited: tuple[Gateway, str], keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, url = audited
    service = CheckpointService(gateway.store, keys.signer)
    service.sign_now()
    _rewrite_from(gateway.store, 2)
    _campaign(gateway, 3, 1)

    with (
        caplog.at_level(logging.ERROR, "gateway.checkpoints"),
        pytest.raises(audit.CheckpointError, match=r"first 9 records .*rewritten"),
    ):
        service.sign_now()
    assert "refusing to sign" in caplog.text
    code, output = _cli("audit", "verify", "--db", url, "--key", str(keys.pub_file))
    assert code == 1
    assert output.startswith("FAIL: the Merkle root of the first 9 records")
    assert "rewritten" in output


def test_an_edited_body_below_the_checkpoint_refuses_signing(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    gateway, url = audited
    service = CheckpointService(gateway.store, keys.signer)
    service.sign_now()
    _exec(
        gateway.store,
        "UPDATE audit_records SET body = replace(body, 'ALLOW', 'DENY') WHERE seq = 2",
    )
    _campaign(gateway, 3, 1)

    with pytest.raises(audit.CheckpointError, match="audit record 2: stored hash"):
        service.sign_now()
    code, output = _cli("audit", "verify", "--db", url, "--key", str(keys.pub_file))
    assert code == 1 and output.startswith("FAIL: audit record 2:"), output


def test_records_cut_below_the_checkpoint_are_reported_as_truncation(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    gateway, url = audited
    service = CheckpointService(gateway.store, keys.signer)
    service.sign_now()
    _truncate_to(gateway.store, 6)

    code, output = _cli("audit", "verify", "--db", url)
    assert code == 0, output  # the chain alone cannot see it
    with pytest.raises(audit.CheckpointError, match="log truncated"):
        service.sign_now()
    code, output = _cli("audit", "verify", "--db", url, "--key", str(keys.pub_file))
    assert code == 1
    assert "holds 6 records" in output and "log truncated" in output


def test_periodic_signer_signs_at_stop_and_fails_closed(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    gateway = audited[0]
    signer = PeriodicSigner(CheckpointService(gateway.store, keys.signer), 3600)
    assert signer.start()
    _campaign(gateway, 3, 1)
    signer.stop()
    latest = gateway.store.latest_checkpoint()
    assert latest is not None and latest.size == 12

    _truncate_to(gateway.store, 4)
    refused = PeriodicSigner(CheckpointService(gateway.store, keys.signer), 3600)
    assert not refused.start() and refused.disabled
    _campaign(gateway, 4, 5)
    refused.stop()
    latest = gateway.store.latest_checkpoint()
    assert latest is not None and latest.size == 12


# -- the command line ---------------------------------------------------------


def test_cli_keygen_then_checkpoint(
    audited: tuple[Gateway, str], tmp_path: Path
) -> None:
    url = audited[1]
    code, output = _cli("audit", "keygen", ORIGIN, "--out", str(tmp_path / "k"))
    assert code == 0, output
    key = tmp_path / "k" / "tollgate.local_audit.key"
    pub = tmp_path / "k" / "tollgate.local_audit.pub"

    code, output = _cli("audit", "checkpoint", "--db", url, "--key", str(key))
    assert code == 0 and output.startswith(f"signed checkpoint {ORIGIN} at size 9")
    code, output = _cli("audit", "checkpoint", "--db", url, "--key", str(key))
    assert code == 0 and "nothing new" in output
    code, output = _cli("audit", "verify", "--db", url, "--key", str(pub))
    assert code == 0 and "matches signed checkpoint" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--checkpoint", "x.checkpoint"), "--checkpoint needs --key", id="no-key"
        ),
        pytest.param(("--key", "missing.pub"), "cannot read", id="missing-key-file"),
    ],
)
def test_cli_verify_bad_usage_exits_2(
    audited: tuple[Gateway, str], args: tuple[str, ...], message: str
) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", "--db", audited[1], *args])
    assert result.exit_code == 2 and message in result.output


def test_cli_verify_key_without_checkpoint_fails(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    code, output = _cli(
        "audit", "verify", "--db", audited[1], "--key", str(keys.pub_file)
    )
    assert code == 1 and "no signed checkpoint" in output


def test_cli_checkpoint_with_a_public_key_is_refused(
    audited: tuple[Gateway, str], keys: Keys
) -> None:
    code, output = _cli(
        "audit", "checkpoint", "--db", audited[1], "--key", str(keys.pub_file)
    )
    assert code == 2 and "expected the private key" in output


def test_export_and_checkpoint_verify_offline(
    audited: tuple[Gateway, str], keys: Keys, tmp_path: Path
) -> None:
    gateway, url = audited
    CheckpointService(gateway.store, keys.signer).sign_now()
    _campaign(gateway, 3, 1)  # the export may be longer than the checkpoint
    export = tmp_path / "audit.jsonl"

    code, output = _cli("audit", "export", "--db", url, str(export))
    assert code == 0, output
    note = tmp_path / "audit.jsonl.checkpoint"
    assert note.exists()
    offline_args = ["verify", str(export), "--checkpoint", str(note)]
    offline = subprocess.run(
        [sys.executable, "-m", "audit", *offline_args, "--key", str(keys.pub_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "12 records" in offline.stdout and "at size 9" in offline.stdout
    args = ["audit", "verify", "--export", str(export), "--checkpoint", str(note)]
    code, output = _cli(*args, "--key", str(keys.pub_file))
    assert code == 0 and "matches signed checkpoint" in output

    lines = export.read_bytes().splitlines(keepends=True)
    export.write_bytes(b"".join(lines[:5]))
    code, output = _cli(*args, "--key", str(keys.pub_file))
    assert code == 1 and "log truncated" in output


def test_prove_and_verify_proof_round_trip(
    audited: tuple[Gateway, str], keys: Keys, tmp_path: Path
) -> None:
    gateway, url = audited
    proof = tmp_path / "proof.json"
    code, output = _cli("audit", "prove", "5", "--out", str(proof), "--db", url)
    assert code == 2 and "no signed checkpoint covers record 5" in output

    CheckpointService(gateway.store, keys.signer).sign_now()
    code, output = _cli("audit", "prove", "5", "--out", str(proof), "--db", url)
    assert code == 0, output
    code, output = _cli(
        "audit", "verify-proof", str(proof), "--key", str(keys.pub_file)
    )
    assert code == 0 and output.startswith("OK: record 5 ")

    data = json.loads(proof.read_text())
    assert data["record"]["body"]["outcome"] == "ALLOW"
    data["record"]["body"]["outcome"] = "DENY"
    proof.write_text(json.dumps(data))
    code, output = _cli(
        "audit", "verify-proof", str(proof), "--key", str(keys.pub_file)
    )
    assert code == 1 and output.startswith("FAIL: inclusion proof")


def test_prove_refuses_once_the_signed_records_were_rewritten(
    audited: tuple[Gateway, str], keys: Keys, tmp_path: Path
) -> None:
    gateway, url = audited
    CheckpointService(gateway.store, keys.signer).sign_now()
    _rewrite_from(gateway.store, 3)
    code, output = _cli(
        "audit", "prove", "2", "--out", str(tmp_path / "p.json"), "--db", url
    )
    assert code == 1 and "rewritten" in output


# -- the invariant, for any log ----------------------------------------------

_bodies = st.dictionaries(
    st.sampled_from(["contact_id", "channel", "outcome", "stage", "n"]),
    st.one_of(st.integers(-5, 5), st.text(alphabet="abcdefgh_", max_size=8)),
    max_size=4,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["decision", "event", "consent"]), _bodies),
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_appending_then_signing_always_verifies(
    batches: list[list[tuple[str, dict[str, object]]]],
) -> None:
    signer, verifier = audit.generate_key(ORIGIN)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(f"sqlite:///{folder}/t.db")
        try:
            service = CheckpointService(store, signer)
            signed: list[audit.Checkpoint] = []
            for batch in batches:
                for kind, body in batch:
                    store.append_audit(kind, body)
                stored = service.sign_now()
                if stored is not None:
                    signed.append(audit.open_checkpoint(stored.note, verifier))
            leaves = list(store.leaf_hashes())
        finally:
            store.close()
    assert sum(map(len, batches)) == len(leaves)
    for old, new in itertools.pairwise(signed):
        proof = audit.consistency_proof(leaves[: new.size], old.size)
        audit.verify_consistency(
            old.size, new.size, old.root_hash, new.root_hash, proof
        )
    if leaves:
        assert signed[-1].size == len(leaves)
        assert signed[-1].root_hash == audit.root(leaves)


def test_verify_on_a_live_store_checks_up_to_the_head_it_read_first(
    audited: tuple[Gateway, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, url = audited
    reading = Store.audit_records

    def appended_meanwhile(store: Store, *args: object, **kwargs: object) -> object:
        _campaign(gateway, 10, 1)  # a running gateway writes during the check
        return reading(store, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "audit_records", appended_meanwhile)
    code, output = _cli("audit", "verify", "--db", url)

    assert code == 0, output
    assert output.startswith("OK: 9 records, head seq 9"), output
    assert gateway.store.audit_head()[0] == 12


def test_a_record_written_after_the_head_outside_the_gateway_is_reported(
    audited: tuple[Gateway, str],
) -> None:
    gateway, url = audited
    _exec(
        gateway.store,
        "INSERT INTO audit_records (seq, recorded_at, kind, body, prev_hash, hash,"
        " salt) SELECT 10, recorded_at, kind, body, hash, hash, salt"
        " FROM audit_records WHERE seq = 9",
    )

    code, output = _cli("audit", "verify", "--db", url)

    assert code == 1
    assert "1 audit record(s) lie after the store's audit head (record 9)" in output
