"""Record leaves, single-record proofs, Merkle properties and the new CLI commands."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import (
    AuditError,
    AuditRecord,
    ChainBrokenError,
    Checkpoint,
    CheckpointError,
    ProofError,
    RecordProof,
    SignatureError,
    consistency_proof,
    generate_key,
    inclusion_proof,
    leaf_hash,
    make_record,
    prove,
    record_hash,
    record_leaf_hashes,
    root,
    sign_note,
    verify_chain,
    verify_consistency,
    verify_inclusion,
    verify_record_proof,
    write_jsonl,
)
from audit.__main__ import main

ChainFactory = Callable[[int], list[AuditRecord]]
ORIGIN = "tollgate.example/audit"
KEYS = generate_key(ORIGIN)
OTHER_KEYS = generate_key(ORIGIN)


def signed_checkpoint(records: list[AuditRecord], size: int, key: str = KEYS[0]) -> str:
    head = Checkpoint(ORIGIN, size, root(record_leaf_hashes(records[:size])))
    return sign_note(head.to_text(), key)


# Salted records


def test_records_are_salted_and_unsalted_ones_still_verify() -> None:
    salted = make_record(None, "decision", {"contact": "ct_1"}, "2026-12-04T15:00:00Z")
    plain = make_record(
        None, "decision", {"contact": "ct_1"}, "2026-12-04T15:00:00Z", salt=""
    )

    assert len(salted.salt) == 64 and salted.hash != plain.hash
    assert "salt" not in plain.to_dict() and salted.to_dict()["salt"] == salted.salt
    assert AuditRecord.from_dict(plain.to_dict()) == plain
    verify_chain([salted])
    verify_chain([plain])


def test_editing_the_salt_breaks_the_chain(chain_of: ChainFactory) -> None:
    records = chain_of(3)
    records[1] = dataclasses.replace(records[1], salt="ab" * 32)

    with pytest.raises(ChainBrokenError, match="stored hash"):
        verify_chain(records)


# Proving and verifying one record


@pytest.mark.parametrize(
    ("length", "size", "seq"),
    [(1, 1, 1), (2, 2, 1), (5, 5, 5), (7, 6, 3), (8, 8, 8), (13, 13, 9), (13, 11, 1)],
)
def test_prove_and_verify(
    chain_of: ChainFactory, length: int, size: int, seq: int
) -> None:
    records = chain_of(length)

    proof = prove(records, seq, signed_checkpoint(records, size))

    verify_record_proof(proof, KEYS[1])
    assert (proof.index, proof.tree_size) == (seq - 1, size)


def test_a_proof_verifies_from_its_file_alone(
    tmp_path: Path, chain_of: ChainFactory
) -> None:
    records = chain_of(9)
    path = tmp_path / "proof.json"
    path.write_text(prove(records, 4, signed_checkpoint(records, 9)).to_json())
    del records

    proof = RecordProof.from_json(path.read_text())

    verify_record_proof(proof, KEYS[1])


def _proof(chain_of: ChainFactory) -> RecordProof:
    records = chain_of(10)
    return prove(records, 6, signed_checkpoint(records, 10))


def _flip(hex_digest: str) -> str:
    return ("1" if hex_digest[0] == "0" else "0") + hex_digest[1:]


@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        pytest.param(
            lambda p: dataclasses.replace(
                p, record=dataclasses.replace(p.record, body={"contact": "ct_x"})
            ),
            ProofError,
            "inclusion proof: leads to root",
            id="record-body",
        ),
        pytest.param(
            lambda p: dataclasses.replace(
                p, inclusion=[_flip(p.inclusion[0]), *p.inclusion[1:]]
            ),
            ProofError,
            "inclusion proof",
            id="proof-path",
        ),
        pytest.param(
            lambda p: dataclasses.replace(p, inclusion=p.inclusion[:-1]),
            ProofError,
            "too few",
            id="proof-path-short",
        ),
        pytest.param(
            lambda p: dataclasses.replace(p, index=p.index + 1),
            ProofError,
            "leaf index",
            id="index",
        ),
        pytest.param(
            lambda p: dataclasses.replace(
                p, checkpoint_note=p.checkpoint_note.replace("\n10\n", "\n11\n", 1)
            ),
            SignatureError,
            "does not match the text",
            id="checkpoint-text",
        ),
        pytest.param(
            lambda p: dataclasses.replace(p, tree_size=11),
            ProofError,
            "tree size",
            id="tree-size",
        ),
    ],
)
def test_tampered_proofs_fail(
    chain_of: ChainFactory,
    tamper: Callable[[RecordProof], RecordProof],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        verify_record_proof(tamper(_proof(chain_of)), KEYS[1])


def test_another_key_fails(chain_of: ChainFactory) -> None:
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        verify_record_proof(_proof(chain_of), OTHER_KEYS[1])


def test_a_logged_record_with_a_bad_hash_fails_its_own_check(
    chain_of: ChainFactory,
) -> None:
    records = chain_of(4)
    records[2] = dataclasses.replace(records[2], kind="event")
    proof = prove(records, 3, signed_checkpoint(records, 4))

    with pytest.raises(ChainBrokenError, match="stored hash"):
        verify_record_proof(proof, KEYS[1])


def test_proving_against_a_checkpoint_of_other_records_fails(
    chain_of: ChainFactory,
) -> None:
    records = chain_of(4)
    note = signed_checkpoint(chain_of(4), 4)

    with pytest.raises(ProofError, match="do not hash to the checkpoint root"):
        prove(records, 2, note)


def test_record_hash_is_unchanged_by_the_proof_round_trip(
    chain_of: ChainFactory,
) -> None:
    proof = _proof(chain_of)

    again = RecordProof.from_json(proof.to_json())

    assert again == proof
    assert (
        record_hash(
            again.record.seq,
            again.record.recorded_at,
            again.record.kind,
            again.record.body,
            again.record.prev_hash,
            again.record.salt,
        )
        == again.record.hash
    )


# Properties of the Merkle tree

LOGS = st.lists(st.binary(max_size=16), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None)
@given(LOGS, st.data())
def test_every_inclusion_proof_verifies(
    entries: list[bytes], data: st.DataObject
) -> None:
    hashes = [leaf_hash(entry) for entry in entries]
    tree_root = root(hashes)
    for index in range(len(hashes)):
        proof = inclusion_proof(hashes, index)
        verify_inclusion(hashes[index], index, len(hashes), proof, tree_root)

    index = data.draw(st.integers(0, len(hashes) - 1))
    proof = inclusion_proof(hashes, index)
    if proof:
        node = data.draw(st.integers(0, len(proof) - 1))
        byte = data.draw(st.integers(0, 31))
        broken = list(proof)
        broken[node] = bytes(
            b ^ (1 if i == byte else 0) for i, b in enumerate(proof[node])
        )
        with pytest.raises(ProofError):
            verify_inclusion(hashes[index], index, len(hashes), broken, tree_root)


@settings(max_examples=60, deadline=None)
@given(LOGS, st.data())
def test_every_consistency_proof_verifies(
    entries: list[bytes], data: st.DataObject
) -> None:
    hashes = [leaf_hash(entry) for entry in entries]
    new = data.draw(st.integers(1, len(hashes)))
    old = data.draw(st.integers(1, new))
    old_root, new_root = root(hashes[:old]), root(hashes[:new])

    proof = consistency_proof(hashes[:new], old)
    verify_consistency(old, new, old_root, new_root, proof)

    for node in range(len(proof)):
        for byte in range(32):
            broken = list(proof)
            broken[node] = bytes(
                b ^ (0x80 if i == byte else 0) for i, b in enumerate(proof[node])
            )
            with pytest.raises(ProofError):
                verify_consistency(old, new, old_root, new_root, broken)


# The command line


def _files(tmp_path: Path, records: list[AuditRecord], size: int) -> tuple[str, str]:
    note = tmp_path / "checkpoint.note"
    note.write_text(signed_checkpoint(records, size), encoding="utf-8")
    key = tmp_path / "log.pub"
    key.write_text(KEYS[1] + "\n", encoding="utf-8")
    return str(note), str(key)


def _export(tmp_path: Path, records: list[AuditRecord]) -> str:
    path = tmp_path / "audit.jsonl"
    with path.open("wb") as fp:
        write_jsonl(records, fp)
    return str(path)


def test_cli_verifies_an_export_against_its_checkpoint(
    tmp_path: Path, chain_of: ChainFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    records = chain_of(9)
    note, key = _files(tmp_path, records, 7)

    status = main(
        ["verify", _export(tmp_path, records), "--checkpoint", note, "--key", key]
    )

    assert status == 0
    assert "matches signed checkpoint tollgate.example/audit at size 7" in (
        capsys.readouterr().out
    )


def test_cli_detects_truncation_below_the_checkpoint(
    tmp_path: Path, chain_of: ChainFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    records = chain_of(9)
    note, key = _files(tmp_path, records, 9)

    status = main(
        ["verify", _export(tmp_path, records[:6]), "--checkpoint", note, "--key", key]
    )

    assert status == 1
    assert (
        "holds 6 records, but the signed checkpoint covers 9" in capsys.readouterr().out
    )


def test_cli_detects_a_rewritten_chain(
    tmp_path: Path, chain_of: ChainFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    note, key = _files(tmp_path, chain_of(5), 5)

    status = main(
        ["verify", _export(tmp_path, chain_of(5)), "--checkpoint", note, "--key", key]
    )

    assert status == 1
    assert "Merkle root of the first 5 records" in capsys.readouterr().out


def test_cli_verify_proof_and_keygen(
    tmp_path: Path, chain_of: ChainFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", ORIGIN, "--out", str(tmp_path)]) == 0
    private = tmp_path / "tollgate.example_audit.key"
    public = tmp_path / "tollgate.example_audit.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    records = chain_of(6)
    head = Checkpoint(ORIGIN, 6, root(record_leaf_hashes(records)))
    note = sign_note(head.to_text(), private.read_text().strip())
    proof_path = tmp_path / "proof.json"
    proof_path.write_text(prove(records, 2, note).to_json())

    assert main(["verify-proof", str(proof_path), "--key", str(public)]) == 0
    data = json.loads(proof_path.read_text())
    data["record"]["kind"] = "event"
    proof_path.write_text(json.dumps(data))
    assert main(["verify-proof", str(proof_path), "--key", str(public)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL: inclusion proof")


def test_cli_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    assert main(["keygen", "log", "--out", str(tmp_path)]) == 0

    assert main(["keygen", "log", "--out", str(tmp_path)]) == 2


def test_new_errors_share_the_audit_root() -> None:
    for error in (CheckpointError, ProofError, SignatureError):
        assert issubclass(error, AuditError)
