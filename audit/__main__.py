"""Command line verifier: ``python -m audit verify FILE.jsonl``.

Needs nothing but the audit package, so a compliance officer can check an
export anywhere. Exit status: 0 the chain verifies, 1 it does not (or a line is
malformed), 2 the file cannot be read or the command line is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from audit._chain import verify_chain
from audit._jsonl import read_jsonl
from audit.errors import AuditError

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNREADABLE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    return _verify(args.file)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m audit", description="Tollgate audit log tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", help="verify the hash chain of a JSON lines export"
    )
    verify.add_argument("file", metavar="FILE.jsonl", help="the export to verify")
    return parser


def _verify(path: str) -> int:
    try:
        with open(path, "rb") as fp:
            summary = verify_chain(read_jsonl(fp))
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except AuditError as exc:
        print(f"FAIL: {exc}")
        return EXIT_FAIL
    noun = "record" if summary.count == 1 else "records"
    print(f"OK: {summary.count} {noun}, head {summary.head_seq} {summary.head_hash}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
