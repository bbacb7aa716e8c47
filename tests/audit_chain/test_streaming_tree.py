"""`StreamingTree` gives what the in-memory reference gives, from one pass.

The reference is `root`, `inclusion_proof` and `consistency_proof` over the
whole list of leaf hashes (checked against the RFC 6962 vectors in
test_merkle_vectors.py); the streamed tree sees each leaf hash once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import (
    EMPTY_ROOT,
    AuditRecord,
    Checkpoint,
    StreamingTree,
    consistency_proof,
    generate_key,
    inclusion_proof,
    leaf_hash,
    prove,
    record_leaf_hashes,
    root,
    sign_note,
    verify_consistency,
    verify_inclusion,
)


def _leaves(size: int) -> list[bytes]:
    return [leaf_hash(n.to_bytes(4, "big")) for n in range(size)]


def _stream(
    leaves: Iterable[bytes],
    tree_size: int | None = None,
    *,
    old_size: int = 0,
    index: int | None = None,
) -> StreamingTree:
    tree = StreamingTree(tree_size, old_size=old_size, index=index)
    for leaf in leaves:
        tree.append(leaf)
    return tree


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 1100).flatmap(lambda n: st.tuples(st.just(n), st.data())))
def test_streamed_roots_and_proofs_equal_the_reference(
    case: tuple[int, st.DataObject],
) -> None:
    size, data = case
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old size")
    leaves = _leaves(size)

    tree = _stream(leaves, size, old_size=old, index=index)

    assert tree.size == size
    assert tree.root() == root(leaves)
    assert tree.old_root() == root(leaves[:old])
    assert tree.inclusion_proof() == inclusion_proof(leaves, index)
    assert tree.consistency_proof() == consistency_proof(leaves, old)
    verify_inclusion(leaves[index], index, size, tree.inclusion_proof(), tree.root())
    verify_consistency(
        old, size, tree.old_root(), tree.root(), tree.consistency_proof()
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_without_a_tree_size_it_keeps_the_roots_only(size: int, old: int) -> None:
    leaves = _leaves(size)

    tree = _stream(leaves, old_size=old)

    assert tree.root() == root(leaves)
    if old <= size:
        assert tree.old_root() == root(leaves[:old])
    else:
        with pytest.raises(ValueError, match="fewer than the old size"):
            tree.old_root()


def test_an_empty_old_tree_has_the_empty_root_and_no_consistency_proof() -> None:
    tree = _stream(_leaves(5), 5)

    assert tree.old_root() == EMPTY_ROOT
    with pytest.raises(ValueError, match="old size above 0"):
        tree.consistency_proof()


@pytest.mark.parametrize(
    ("tree_size", "old_size", "index", "expected"),
    [
        pytest.param(3, 4, None, "old size 4", id="old-size-beyond-the-tree"),
        pytest.param(None, -1, None, "old size -1", id="negative-old-size"),
        pytest.param(3, 0, 3, "outside a tree of 3", id="index-past-the-end"),
        pytest.param(3, 0, -1, "outside a tree of 3", id="negative-index"),
        pytest.param(None, 0, 0, "outside a tree of None", id="index-without-size"),
    ],
)
def test_impossible_plans_are_usage_errors(
    tree_size: int | None, old_size: int, index: int | None, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        StreamingTree(tree_size, old_size=old_size, index=index)


def test_a_leaf_past_the_tree_size_is_a_usage_error() -> None:
    tree = _stream(_leaves(3), 3)

    with pytest.raises(ValueError, match="holds 3 leaves"):
        tree.append(leaf_hash(b"one too many"))


def test_a_proof_before_the_last_leaf_is_a_usage_error() -> None:
    tree = _stream(_leaves(6), 7, old_size=3, index=6)

    with pytest.raises(ValueError, match="needs them all, found 6"):
        tree.inclusion_proof()
    with pytest.raises(ValueError, match="needs them all, found 6"):
        tree.consistency_proof()


def test_no_index_no_inclusion_proof() -> None:
    with pytest.raises(ValueError, match="no leaf index"):
        _stream(_leaves(2), 2).inclusion_proof()


def test_prove_reads_the_records_once(
    chain_of: Callable[[int], list[AuditRecord]],
) -> None:
    records = chain_of(12)
    head = Checkpoint(
        "tollgate.example/audit", 10, root(record_leaf_hashes(records[:10]))
    )
    note = sign_note(head.to_text(), generate_key("tollgate.example/audit")[0])

    streamed = prove(iter(records), 7, note)

    assert streamed == prove(records, 7, note)
