"""JSON lines export and import: canonical lines out, strict parsing in."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

from audit import (
    AuditFormatError,
    AuditRecord,
    ChainBrokenError,
    canonical_json,
    read_jsonl,
    verify_chain,
    write_jsonl,
)

ChainFactory = Callable[[int], list[AuditRecord]]


def export(records: list[AuditRecord]) -> bytes:
    buffer = io.BytesIO()
    write_jsonl(records, buffer)
    return buffer.getvalue()


def test_round_trip_gives_equal_records_that_verify(chain_of: ChainFactory) -> None:
    records = chain_of(6)
    buffer = io.BytesIO()

    written = write_jsonl(records, buffer)
    buffer.seek(0)
    read_back = list(read_jsonl(buffer))

    assert written == 6
    assert read_back == records
    assert verify_chain(read_back).head_hash == records[-1].hash


def test_each_line_is_canonical_utf8_json(chain_of: ChainFactory) -> None:
    lines = export(chain_of(3)).split(b"\n")

    assert lines[-1] == b""  # every line, the last included, ends with "\n"
    for line in lines[:-1]:
        assert line == canonical_json(json.loads(line))
        assert "Zoë's café ☕".encode() in line


def test_read_back_key_order_does_not_matter(chain_of: ChainFactory) -> None:
    reordered = []
    for line in export(chain_of(4)).splitlines():
        data = json.loads(line)
        data["body"] = dict(reversed(list(data["body"].items())))
        reordered.append(json.dumps(dict(reversed(list(data.items())))).encode())

    summary = verify_chain(read_jsonl(reordered))

    assert summary.count == 4


def test_tampered_line_reads_but_fails_verification(chain_of: ChainFactory) -> None:
    lines = export(chain_of(4)).splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"ct_0002"', b'"ct_9999"')

    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(read_jsonl(lines))

    assert caught.value.seq == 3


def _replace_field(name: str, value: object) -> Callable[[bytes], bytes]:
    def change(line: bytes) -> bytes:
        data = json.loads(line)
        data[name] = value
        return json.dumps(data).encode() + b"\n"

    return change


def _drop_field(name: str) -> Callable[[bytes], bytes]:
    def change(line: bytes) -> bytes:
        data = json.loads(line)
        del data[name]
        return json.dumps(data).encode() + b"\n"

    return change


MALFORMED = [
    pytest.param(lambda line: b"{not json\n", "not valid JSON", id="not-json"),
    pytest.param(lambda line: b"\n", "empty line", id="empty-line"),
    pytest.param(lambda line: b"[1, 2]\n", "JSON object, found list", id="array"),
    pytest.param(lambda line: b"\xff\xfe\n", "not valid JSON", id="bad-utf8"),
    pytest.param(
        lambda line: line.replace(b'"seq":3', b'"seq":3,"seq":3'),
        "repeats a key",
        id="duplicate-key",
    ),
    pytest.param(lambda line: line.replace(b'"seq":3', b'"seq":NaN'), "NaN", id="nan"),
    pytest.param(_drop_field("prev_hash"), "lacks field(s) prev_hash", id="missing"),
    pytest.param(_replace_field("extra", 1), "1 unexpected field", id="extra"),
    pytest.param(_replace_field("seq", "3"), "'seq' must be", id="seq-string"),
    pytest.param(_replace_field("seq", True), "'seq' must be", id="seq-bool"),
    pytest.param(_replace_field("seq", 0), "'seq' must be", id="seq-zero"),
    pytest.param(_replace_field("kind", 7), "'kind' must be", id="kind-number"),
    pytest.param(
        _replace_field("recorded_at", "yesterday"), "'recorded_at'", id="timestamp"
    ),
    pytest.param(_replace_field("body", [1]), "'body' must be", id="body-array"),
    pytest.param(
        _replace_field("body", {"amount": 2.5}), "body.amount", id="body-float"
    ),
    pytest.param(_replace_field("hash", "A" * 64), "'hash' must be", id="upper-hex"),
    pytest.param(
        _replace_field("prev_hash", "0" * 63), "'prev_hash' must be", id="short-hash"
    ),
]


@pytest.mark.parametrize(("change", "fragment"), MALFORMED)
def test_malformed_line_names_its_line_number(
    chain_of: ChainFactory, change: Callable[[bytes], bytes], fragment: str
) -> None:
    lines = export(chain_of(4)).splitlines(keepends=True)
    lines[2] = change(lines[2])
    records = read_jsonl(lines)

    assert [next(records).seq, next(records).seq] == [1, 2]
    with pytest.raises(AuditFormatError) as caught:
        next(records)

    assert caught.value.line == 3
    assert str(caught.value).startswith("line 3: ")
    assert fragment in str(caught.value)
