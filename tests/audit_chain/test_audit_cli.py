"""``python -m audit verify``, run as a compliance officer would run it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from audit import AuditRecord, write_jsonl
from audit.__main__ import main

ChainFactory = Callable[[int], list[AuditRecord]]


def write_export(path: Path, records: list[AuditRecord]) -> Path:
    with path.open("wb") as fp:
        write_jsonl(records, fp)
    return path


def run_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        cwd=path.parent,
    )


def test_subprocess_verifies_a_good_export(
    tmp_path: Path, chain_of: ChainFactory
) -> None:
    records = chain_of(5)
    path = write_export(tmp_path / "audit.jsonl", records)

    result = run_verify(path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"OK: 5 records, head 5 {records[-1].hash}\n"


def test_subprocess_fails_a_tampered_export(
    tmp_path: Path, chain_of: ChainFactory
) -> None:
    path = write_export(tmp_path / "audit.jsonl", chain_of(5))
    lines = path.read_bytes().splitlines(keepends=True)
    edited = lines[2].replace(b'"decision":"allow"', b'"decision":"deny"')
    assert edited != lines[2]
    lines[2] = edited
    path.write_bytes(b"".join(lines))

    result = run_verify(path)

    assert result.returncode == 1
    assert result.stdout.startswith("FAIL: audit record 3: stored hash ")
    assert result.stdout.rstrip().endswith("(record edited?)")


def test_missing_file_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.jsonl"

    status = main(["verify", str(missing)])

    assert status == 2
    assert capsys.readouterr().err == (
        f"error: cannot read {missing}: No such file or directory\n"
    )


def test_malformed_line_fails_naming_the_line(
    tmp_path: Path, chain_of: ChainFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_export(tmp_path / "audit.jsonl", chain_of(3))
    path.write_bytes(path.read_bytes() + b"garbage\n")

    status = main(["verify", str(path)])

    assert status == 1
    assert capsys.readouterr().out.startswith("FAIL: line 4: not valid JSON")


def test_empty_export_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_export(tmp_path / "audit.jsonl", [])

    status = main(["verify", str(path)])

    assert status == 0
    assert capsys.readouterr().out == f"OK: 0 records, head 0 {'0' * 64}\n"


def test_missing_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main([])

    assert caught.value.code == 2
