"""C2SP signed notes, key texts, checkpoints and the non-forking signer."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from audit import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    KeyFormatError,
    SignatureError,
    consistency_proof,
    generate_key,
    parse_verifier,
    root,
    sign_note,
    verify_note,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data" / "rfc6962.json").read_text("utf-8")
)
EXAMPLE = VECTORS["signed_note_example"]
EXAMPLE_NOTE = EXAMPLE["note_text"] + "\n" + EXAMPLE["signature_line"] + "\n"
LEAVES = [hashlib.sha256(bytes([i])).digest() for i in range(20)]
ORIGIN = "tollgate.example/audit"


def test_the_specs_example_note_verifies() -> None:
    assert verify_note(EXAMPLE_NOTE, [EXAMPLE["vkey"]]) == EXAMPLE["note_text"]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda n: n.replace("example message", "exemple message"), id="text"
        ),
        pytest.param(lambda n: n.replace("Uw2QOkn8", "Uw2QOkn9"), id="key-hash"),
        pytest.param(lambda n: n.replace("Ztg1ERYN", "Ztg1ERYM"), id="signature"),
        pytest.param(lambda n: n.replace("\n\n", "\n"), id="no-blank-line"),
        pytest.param(lambda n: n.replace("\u2014 ", "- "), id="hyphen"),
        pytest.param(lambda n: n[:-1], id="no-final-newline"),
        pytest.param(lambda n: n.replace("foo U", "bar U"), id="unknown-signer"),
        pytest.param(lambda n: "\x07" + n, id="control-character"),
    ],
)
def test_a_tampered_example_note_fails(tamper: Any) -> None:
    with pytest.raises(SignatureError):
        verify_note(tamper(EXAMPLE_NOTE), [EXAMPLE["vkey"]])


def test_sign_and_verify_round_trip() -> None:
    signer, verifier = generate_key(ORIGIN)

    note = sign_note("hello\nworld\n", signer)

    assert note.startswith("hello\nworld\n\n\u2014 tollgate.example/audit ")
    assert verify_note(note, [verifier]) == "hello\nworld\n"


def test_another_key_of_the_same_name_is_not_trusted() -> None:
    signer, _ = generate_key(ORIGIN)
    _, other = generate_key(ORIGIN)

    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        verify_note(sign_note("hello\n", signer), [other])


def test_key_texts_have_the_c2sp_format() -> None:
    signer, verifier = generate_key(ORIGIN)

    name, hash_hex, key_b64 = verifier.split("+", 2)
    public = base64.b64decode(key_b64)
    expected = hashlib.sha256(name.encode() + b"\n" + public).digest()[:4].hex()
    assert (name, hash_hex, public[:1], len(public)) == (ORIGIN, expected, b"\x01", 33)
    assert signer.startswith(f"PRIVATE+KEY+{ORIGIN}+{hash_hex}+")
    assert parse_verifier(verifier).to_text() == verifier


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("example.com/foo+530d903a", id="two-parts"),
        pytest.param("example.com/foo+530d903b+" + EXAMPLE["vkey"][25:], id="hash"),
        pytest.param("example.com/foo+530d903a+Aeky", id="short-key"),
        pytest.param("example.com/foo+530d903a+!!!!", id="not-base64"),
        pytest.param("+530d903a+" + EXAMPLE["vkey"][25:], id="empty-name"),
    ],
)
def test_malformed_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_verifier(text)


def test_a_verifier_key_cannot_sign() -> None:
    _, verifier = generate_key(ORIGIN)

    with pytest.raises(KeyFormatError, match="PRIVATE"):
        sign_note("hello\n", verifier)


def test_checkpoint_text_round_trip_and_spec_example() -> None:
    checkpoint = Checkpoint(ORIGIN, 7, root(LEAVES[:7]))
    text = checkpoint.to_text()

    assert text.splitlines()[1:] == [
        "7",
        base64.b64encode(checkpoint.root_hash).decode(),
    ]
    assert Checkpoint.parse(text) == checkpoint
    example = VECTORS["checkpoint_format_example"]["text"]
    parsed = Checkpoint.parse(example.split("\n\n")[0] + "\n")
    assert (parsed.origin, parsed.size) == ("example.com/behind-the-sofa", 20852163)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("o\n1\n", id="no-root"),
        pytest.param(
            "o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n", id="zero"
        ),
        pytest.param("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", id="neg"),
        pytest.param(
            "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", id="short"
        ),
        pytest.param(
            "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", id="origin"
        ),
        pytest.param("o\n1\n" + base64.b64encode(bytes(32)).decode(), id="no-newline"),
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


def _head(size: int) -> Checkpoint:
    return Checkpoint(ORIGIN, size, root(LEAVES[:size]))


def test_signer_signs_a_growing_log() -> None:
    signer_key, verifier = generate_key(ORIGIN)
    signer = CheckpointSigner(signer_key)

    first = signer.sign(_head(3))
    second = signer.sign(_head(11), consistency_proof(LEAVES[:11], 3))
    again = signer.sign(_head(11))

    for note in (first, second, again):
        Checkpoint.parse(verify_note(note, [verifier]))
    assert signer.last == _head(11)


@pytest.mark.parametrize(
    ("head", "proof", "message"),
    [
        pytest.param(_head(4), [], "smaller", id="shrunk"),
        pytest.param(
            Checkpoint(ORIGIN, 5, root(LEAVES[1:6])), [], "differs", id="same-size-fork"
        ),
        pytest.param(
            Checkpoint(ORIGIN, 9, root(LEAVES[1:10])),
            consistency_proof(LEAVES[:9], 5),
            "not proven consistent",
            id="rewritten-prefix",
        ),
        pytest.param(_head(9), [], "not proven consistent", id="no-proof"),
        pytest.param(
            Checkpoint("other.example/log", 9, root(LEAVES[:9])),
            consistency_proof(LEAVES[:9], 5),
            "origin",
            id="other-origin",
        ),
    ],
)
def test_signer_refuses_an_inconsistent_head(
    head: Checkpoint, proof: list[bytes], message: str
) -> None:
    signer_key, _ = generate_key(ORIGIN)
    signer = CheckpointSigner(signer_key, last=_head(5))

    with pytest.raises(CheckpointError, match=message):
        signer.sign(head, proof)

    assert signer.last == _head(5)
