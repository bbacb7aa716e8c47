"""RFC 6962 Merkle tree against the vectors of tests/data/rfc6962.json.

Every root, every inclusion and consistency probe, and every derived proof
runs as its own case, named after the vector it comes from. Roots and derived
proofs are checked both in memory and streamed (`StreamingTree`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from audit import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    CompactRange,
    ProofError,
    StreamingTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data" / "rfc6962.json").read_text("utf-8")
)
TREE = VECTORS["tree"]
LEAF_INPUTS = [bytes.fromhex(x) for x in TREE["leaf_inputs_hex"]]
LEAF_HASHES = [bytes.fromhex(x) for x in TREE["leaf_hashes_hex"]]


def _streamed(
    size: int, *, old_size: int = 0, index: int | None = None
) -> StreamingTree:
    tree = StreamingTree(size, old_size=old_size, index=index)
    for leaf in LEAF_HASHES[:size]:
        tree.append(leaf)
    return tree


def _probe_id(probe: dict[str, Any]) -> str:
    name = probe["file"].removeprefix("testdata/").removesuffix(".json")
    return name + ("-must-reject" if probe["wantErr"] else "-must-accept")


def test_prefixes_are_those_of_rfc6962() -> None:
    assert (LEAF_PREFIX, NODE_PREFIX) == (b"\x00", b"\x01")
    assert EMPTY_ROOT.hex() == TREE["root_by_size_hex"]["0"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(d, h, id=f"leaf-{i}")
        for i, (d, h) in enumerate(zip(LEAF_INPUTS, LEAF_HASHES, strict=True))
    ],
)
def test_leaf_hash(data: bytes, expected: bytes) -> None:
    assert leaf_hash(data) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(int(s), r, id=f"root-size-{s}")
        for s, r in TREE["root_by_size_hex"].items()
    ],
)
def test_root_for_every_size(size: int, expected: str) -> None:
    assert root(LEAF_HASHES[:size]).hex() == expected

    compact = CompactRange()
    for leaf in LEAF_HASHES[:size]:
        compact.append(leaf)
    assert (compact.size, compact.root().hex()) == (size, expected)

    streamed = _streamed(size, old_size=size)
    assert streamed.root().hex() == streamed.old_root().hex() == expected


@pytest.mark.parametrize(
    "probe", [pytest.param(p, id=_probe_id(p)) for p in VECTORS["inclusion_probes"]]
)
def test_inclusion_probe(probe: dict[str, Any]) -> None:
    def verify() -> None:
        verify_inclusion(
            bytes.fromhex(probe["leafHash"]),
            probe["leafIdx"],
            probe["treeSize"],
            [bytes.fromhex(node) for node in probe["proof"]],
            bytes.fromhex(probe["root"]),
        )

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize(
    "probe", [pytest.param(p, id=_probe_id(p)) for p in VECTORS["consistency_probes"]]
)
def test_consistency_probe(probe: dict[str, Any]) -> None:
    def verify() -> None:
        verify_consistency(
            probe["size1"],
            probe["size2"],
            bytes.fromhex(probe["root1"]),
            bytes.fromhex(probe["root2"]),
            [bytes.fromhex(node) for node in probe["proof"]],
        )

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=f"inclusion-leaf-{c['leafIdx']}-of-{c['treeSize']}")
        for c in VECTORS["derived"]["inclusion_proofs"]
    ],
)
def test_derived_inclusion_proof(case: dict[str, Any]) -> None:
    size, index = case["treeSize"], case["leafIdx"]

    proof = inclusion_proof(LEAF_HASHES[:size], index)

    assert [node.hex() for node in proof] == case["proof"]
    assert _streamed(size, index=index).inclusion_proof() == proof
    root_hash = bytes.fromhex(TREE["root_by_size_hex"][str(size)])
    verify_inclusion(bytes.fromhex(case["leafHash"]), index, size, proof, root_hash)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=f"consistency-{c['size1']}-to-{c['size2']}")
        for c in VECTORS["derived"]["consistency_proofs"]
    ],
)
def test_derived_consistency_proof(case: dict[str, Any]) -> None:
    old, new = case["size1"], case["size2"]

    proof = consistency_proof(LEAF_HASHES[:new], old)

    assert [node.hex() for node in proof] == case["proof"]
    assert _streamed(new, old_size=old).consistency_proof() == proof
    roots = TREE["root_by_size_hex"]
    verify_consistency(
        old, new, bytes.fromhex(roots[str(old)]), bytes.fromhex(roots[str(new)]), proof
    )


@pytest.mark.parametrize(
    ("size", "index"), [(0, 0), (3, 3), (3, -1)], ids=["empty", "past-end", "negative"]
)
def test_inclusion_proof_of_a_missing_leaf_is_a_usage_error(
    size: int, index: int
) -> None:
    with pytest.raises(ValueError, match="outside a tree"):
        inclusion_proof(LEAF_HASHES[:size], index)


@pytest.mark.parametrize("old", [0, 4], ids=["from-empty", "beyond-tree"])
def test_consistency_proof_of_impossible_sizes_is_a_usage_error(old: int) -> None:
    with pytest.raises(ValueError, match="old size"):
        consistency_proof(LEAF_HASHES[:3], old)
