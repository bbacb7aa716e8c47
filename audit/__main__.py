"""Command line tools: verify an export or a record proof, make a signing key.

``python -m audit verify FILE.jsonl [--checkpoint NOTE --key VERIFIER]``
``python -m audit verify-proof PROOF.json --key VERIFIER``
``python -m audit keygen NAME --out DIR``

Needs nothing but the audit package, so a compliance officer can check an
export anywhere. ``--key`` names a file holding a verifier key text. Exit
status: 0 the check passes, 1 it does not (or the input is malformed), 2 a file
cannot be read or written or the command line is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from audit._chain import ChainSummary, verify_chain
from audit._checkpoint import Checkpoint, open_checkpoint
from audit._jsonl import read_jsonl
from audit._merkle import CompactRange, leaf_hash
from audit._note import generate_key
from audit._proof import RecordProof, record_leaf, verify_record_proof
from audit._record import AuditRecord
from audit.errors import AuditError, CheckpointError

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNREADABLE = 2


class _Unreadable(Exception):
    """A file named on the command line cannot be read or written."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            if (args.checkpoint is None) != (args.key is None):
                parser.error("--checkpoint and --key must be given together")
            return _verify(args.file, args.checkpoint, args.key)
        if args.command == "verify-proof":
            return _verify_proof(args.file, args.key)
        return _keygen(args.name, args.out)
    except _Unreadable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except AuditError as exc:
        print(f"FAIL: {exc}")
        return EXIT_FAIL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m audit", description="Tollgate audit log tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", help="verify the hash chain of a JSON lines export"
    )
    verify.add_argument("file", metavar="FILE.jsonl", help="the export to verify")
    verify.add_argument(
        "--checkpoint", metavar="NOTE", help="a signed checkpoint the export must match"
    )
    verify.add_argument("--key", metavar="VERIFIER", help="the verifier key file")
    proof = commands.add_parser("verify-proof", help="verify a single-record proof")
    proof.add_argument("file", metavar="PROOF.json", help="the proof file")
    proof.add_argument(
        "--key", metavar="VERIFIER", required=True, help="the verifier key file"
    )
    keygen = commands.add_parser("keygen", help="make an Ed25519 note signing key")
    keygen.add_argument(
        "name", metavar="NAME", help="the key name, e.g. the log origin"
    )
    keygen.add_argument("--out", metavar="DIR", required=True, help="where to write")
    return parser


def _verify(path: str, checkpoint_path: str | None, key_path: str | None) -> int:
    """Verify the chain, then (with a checkpoint) the Merkle root it signs.

    Plan:
      1. verify the checkpoint's signature and parse it (if given);
      2. verify the hash chain, computing the Merkle root of the first
         ``size`` records on the way;
      3. the export is not shorter than the checkpoint (no truncation);
      4. the root of its first ``size`` records is the signed root.
    """
    # Step 1: the signed head, if any.
    checkpoint = None
    if checkpoint_path is not None and key_path is not None:
        note = _read_text(checkpoint_path)
        checkpoint = open_checkpoint(note, _read_text(key_path))

    # Step 2: the chain, and the Merkle root along the way.
    tree = CompactRange()
    signed_root: list[bytes] = []
    wanted = checkpoint.size if checkpoint is not None else -1
    if wanted == 0:
        signed_root.append(tree.root())

    def leaves(records: Iterator[AuditRecord]) -> Iterator[AuditRecord]:
        for record in records:
            yield record
            if tree.size < wanted:
                tree.append(leaf_hash(record_leaf(record)))
                if tree.size == wanted:
                    signed_root.append(tree.root())

    try:
        with open(path, "rb") as fp:
            summary = verify_chain(leaves(read_jsonl(fp)))
    except OSError as exc:
        raise _Unreadable(f"cannot read {path}: {exc.strerror or exc}") from exc

    if checkpoint is not None:
        # Step 3: every signed record is still there.
        _check_not_truncated(summary, checkpoint)

        # Step 4: ... and unchanged.
        if signed_root[0] != checkpoint.root_hash:
            raise CheckpointError(
                f"the Merkle root of the first {checkpoint.size} records is "
                f"{signed_root[0].hex()}, but the signed checkpoint says "
                f"{checkpoint.root_hash.hex()} (records rewritten?)"
            )
    _print_ok(summary, checkpoint)
    return EXIT_OK


def _check_not_truncated(summary: ChainSummary, checkpoint: Checkpoint) -> None:
    if summary.count < checkpoint.size:
        raise CheckpointError(
            f"the export holds {summary.count} records, but the signed checkpoint "
            f"covers {checkpoint.size}: records cut from the end (log truncated)"
        )


def _print_ok(summary: ChainSummary, checkpoint: Checkpoint | None) -> None:
    noun = "record" if summary.count == 1 else "records"
    line = f"OK: {summary.count} {noun}, head {summary.head_seq} {summary.head_hash}"
    if checkpoint is not None:
        line += (
            f"; matches signed checkpoint {checkpoint.origin} at size {checkpoint.size}"
        )
    print(line)


def _verify_proof(path: str, key_path: str) -> int:
    proof = RecordProof.from_json(_read_text(path))
    verify_record_proof(proof, _read_text(key_path))
    print(
        f"OK: record {proof.record.seq} ({proof.record.hash}) is in the signed log "
        f"of size {proof.tree_size}"
    )
    return EXIT_OK


def _keygen(name: str, out: str) -> int:
    try:
        signer, verifier = generate_key(name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    stem = name.replace("/", "_")
    private_path = Path(out) / f"{stem}.key"
    public_path = Path(out) / f"{stem}.pub"
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(signer + "\n")
        os.chmod(private_path, 0o600)
        public_path.write_text(verifier + "\n", encoding="utf-8")
    except OSError as exc:
        raise _Unreadable(f"cannot write key files in {out}: {exc}") from exc
    print(f"wrote {private_path} (keep secret) and {public_path}")
    return EXIT_OK


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fp:
            return fp.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise _Unreadable(f"cannot read {path}: {reason or exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
