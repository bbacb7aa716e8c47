"""RFC 6962 / RFC 9162 Merkle trees over SHA-256: hashing, proofs, verification.

The tree is the one of RFC 9162 section 2.1.1: a leaf hash is SHA-256 of
`LEAF_PREFIX` and the leaf's bytes, an inner node SHA-256 of `NODE_PREFIX`
and its two children, and a tree of n > 1 leaves splits at the largest power
of two below n. The distinct prefixes keep a leaf from ever posing as a node.

Invariants: every function here is pure; `CompactRange` holds one subtree
root per set bit of its size, so a root over N leaves costs O(N) time and
O(log N) memory. Proof *generation* needs the leaf hashes: `inclusion_proof`
and `consistency_proof` take them all, as the reference; `StreamingTree`
takes them one at a time and gives the same proofs in O(log N) memory. Proof
*verification* needs only the proof, the sizes and the roots. Verifiers raise
`ProofError` and nothing else on any bad input.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from audit.errors import ProofError

LEAF_PREFIX: Final = b"\x00"
"""Prefix of a leaf hash input (RFC 6962 section 2.1; RFC 9162 section 2.1.1)."""

NODE_PREFIX: Final = b"\x01"
"""Prefix of an inner node hash input (RFC 6962 section 2.1; RFC 9162 2.1.1)."""

HASH_SIZE: Final = 32
"""Bytes in a SHA-256 digest: every node, leaf hash and root has this size."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the empty tree: SHA-256 of the empty string (RFC 9162 2.1.1)."""


def leaf_hash(data: bytes) -> bytes:
    """Return SHA-256(0x00 || data), the hash of one leaf."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), the hash of an inner node."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class CompactRange:
    """The roots of the perfect subtrees covering leaves [0, size), left to right.

    Appending a leaf hash merges equal-height subtrees like a binary counter,
    so the range holds at most log2(size) + 1 hashes however long the log.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Append one leaf *hash* (not leaf data) at index `size`."""
        node = leaf
        carry = self._size
        while carry & 1:
            node = node_hash(self._stack.pop(), node)
            carry >>= 1
        self._stack.append(node)
        self._size += 1

    def root(self) -> bytes:
        """Return the root hash of the tree of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """Return the Merkle tree hash (MTH) of the given leaf hashes, streaming."""
    compact = CompactRange()
    for leaf in leaf_hashes:
        compact.append(leaf)
    return compact.root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path PATH(index, D[n]) of RFC 9162 section 2.1.3.1.

    The path lists sibling subtree roots from the leaf upwards. Raises
    `ValueError` if ``index`` is not in [0, len(leaf_hashes)).
    """
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    return [
        _range_root(leaf_hashes, low, high)
        for low, high in _inclusion_ranges(index, size)
    ]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return PROOF(old_size, D[n]) of RFC 9162 section 2.1.4.1.

    Raises `ValueError` unless 0 < old_size <= len(leaf_hashes); the proof
    between equal sizes is empty.
    """
    size = len(leaf_hashes)
    if not 0 < old_size <= size:
        raise ValueError(
            f"old size {old_size} must be between 1 and the tree size {size}"
        )
    return [
        _range_root(leaf_hashes, low, high)
        for low, high in _consistency_ranges(old_size, size)
    ]


class StreamingTree:
    """A tree fed one leaf hash at a time: its roots and proofs, O(log n) memory.

    A proof depends on the size of the tree it is for, so name that size, and
    the proofs wanted, before the first leaf; then `append` leaf hashes 0, 1,
    2 ... in order, and read:

    - `root`: the root of the leaves appended so far;
    - `old_root`: the root of the first ``old_size`` leaves;
    - `consistency_proof`: PROOF(old_size, D[tree_size]), when 0 < old_size;
    - `inclusion_proof`: PATH(index, D[tree_size]), when an index is given.

    Each proof hash is the root of a range of leaves and the ranges of one
    proof are disjoint, so each proof is built by hashing its ranges as their
    leaves stream by, one range at a time. The results equal those of
    `root`, `inclusion_proof` and `consistency_proof` over the same leaves.
    """

    __slots__ = (
        "_all",
        "_consistency",
        "_inclusion",
        "_old_root",
        "_old_size",
        "_tree_size",
    )

    def __init__(
        self,
        tree_size: int | None = None,
        *,
        old_size: int = 0,
        index: int | None = None,
    ) -> None:
        """Raise `ValueError` unless 0 <= old_size <= tree_size and index is a
        leaf of the tree (an index needs a tree size)."""
        if old_size < 0 or (tree_size is not None and old_size > tree_size):
            raise ValueError(
                f"old size {old_size} must be between 0 and the tree size {tree_size}"
            )
        self._tree_size = tree_size
        self._old_size = old_size
        self._all = CompactRange()
        self._old_root = EMPTY_ROOT if old_size == 0 else None
        self._inclusion: _RangeRoots | None = None
        self._consistency: _RangeRoots | None = None
        if index is not None:
            if tree_size is None or not 0 <= index < tree_size:
                raise ValueError(
                    f"leaf index {index} is outside a tree of {tree_size} leaves"
                )
            self._inclusion = _RangeRoots(_inclusion_ranges(index, tree_size))
        if tree_size is not None and old_size > 0:
            self._consistency = _RangeRoots(_consistency_ranges(old_size, tree_size))

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._all.size

    @property
    def old_size(self) -> int:
        """The size whose root `old_root` gives."""
        return self._old_size

    def append(self, leaf: bytes) -> None:
        """Append the leaf *hash* at index `size`; `ValueError` past tree_size."""
        index = self._all.size
        if index == self._tree_size:
            raise ValueError(f"the tree holds {index} leaves; cannot append another")
        self._all.append(leaf)
        if self._all.size == self._old_size:
            self._old_root = self._all.root()
        for proof in (self._inclusion, self._consistency):
            if proof is not None:
                proof.append(index, leaf)

    def root(self) -> bytes:
        """Return the root of the tree of the leaves appended so far."""
        return self._all.root()

    def old_root(self) -> bytes:
        """Return the root of the first ``old_size`` leaves; `ValueError` if
        fewer were appended."""
        if self._old_root is None:
            raise ValueError(
                f"{self.size} leaves appended, fewer than the old size {self._old_size}"
            )
        return self._old_root

    def inclusion_proof(self) -> list[bytes]:
        """Return PATH(index, D[tree_size]), leaf to root; `ValueError` if no
        index was given or not every leaf was appended."""
        if self._inclusion is None:
            raise ValueError("no leaf index was given for an inclusion proof")
        self._check_complete()
        return self._inclusion.roots()

    def consistency_proof(self) -> list[bytes]:
        """Return PROOF(old_size, D[tree_size]); `ValueError` if the old size
        is 0 (a proof from the empty tree proves nothing) or not every leaf
        was appended."""
        if self._consistency is None:
            raise ValueError(
                "a consistency proof needs a tree size and an old size above 0"
            )
        self._check_complete()
        return self._consistency.roots()

    def _check_complete(self) -> None:
        if self.size != self._tree_size:
            raise ValueError(
                f"a proof in a tree of {self._tree_size} leaves needs them all, "
                f"found {self.size}"
            )


class _RangeRoots:
    """The roots of disjoint ranges of leaves, each hashed as they stream by.

    Holds the hashes found so far and one compact range, of the range being
    hashed: O(log n) hashes for the ranges of one proof.
    """

    __slots__ = ("_current", "_found", "_pending")

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self._found = [b""] * len(ranges)
        self._pending = deque(
            sorted((low, high, position) for position, (low, high) in enumerate(ranges))
        )
        self._current = CompactRange()

    def append(self, index: int, leaf: bytes) -> None:
        if not self._pending or index < self._pending[0][0]:
            return
        _, high, position = self._pending[0]
        self._current.append(leaf)
        if index + 1 == high:
            self._found[position] = self._current.root()
            self._current = CompactRange()
            self._pending.popleft()

    def roots(self) -> list[bytes]:
        """The roots, in the order the ranges were given."""
        return list(self._found)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root_hash``.

    Plan (RFC 9162 section 2.1.3.2):
      1. the index lies inside the tree, every hash is 32 bytes;
      2. fold the proof into a root, walking the index up the tree;
      3. the proof is exactly as long as the path to the root;
      4. the computed root equals ``root_hash``.
    Raises `ProofError` naming the failed step.
    """
    # Step 1: the arguments describe a possible leaf of a possible tree.
    if not 0 <= index < size:
        raise ProofError(
            f"inclusion proof: leaf index {index} is outside a tree of size {size}"
        )
    _check_hash(leaf, "inclusion proof: leaf hash")
    _check_hash(root_hash, "inclusion proof: root hash")
    _check_proof_hashes(proof, "inclusion proof")

    # Step 2: fold the siblings in, right or left as the index dictates.
    node_index, last_index, computed = index, size - 1, leaf
    for position, sibling in enumerate(proof):
        if last_index == 0:
            raise ProofError(
                f"inclusion proof: has {len(proof)} hashes, more than the "
                f"{position} a tree of size {size} needs for leaf {index}"
            )
        if node_index & 1 or node_index == last_index:
            computed = node_hash(sibling, computed)
            while not node_index & 1 and node_index != 0:
                node_index, last_index = node_index >> 1, last_index >> 1
        else:
            computed = node_hash(computed, sibling)
        node_index, last_index = node_index >> 1, last_index >> 1

    # Step 3: the proof reached the root, no sooner and no later.
    if last_index != 0:
        raise ProofError(
            f"inclusion proof: has {len(proof)} hashes, too few for leaf {index} "
            f"of a tree of size {size}"
        )

    # Step 4: the root the proof leads to is the expected one.
    if computed != root_hash:
        raise ProofError(
            f"inclusion proof: leads to root {computed.hex()}, expected "
            f"{root_hash.hex()} for leaf {index} of a tree of size {size}"
        )


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Check that the tree of ``old_size`` is a prefix of the tree of ``new_size``.

    Plan (RFC 9162 section 2.1.4.2):
      1. the sizes are ordered and the old tree is not empty (a proof from
         the empty tree proves nothing), every proof hash is 32 bytes;
      2. equal sizes need an empty proof and equal roots (compared as given,
         as the transparency-dev reference verifier does);
      3. a larger tree needs a non-empty proof and 32-byte roots;
      4. fold the proof into both roots at once;
      5. the proof is exactly as long as the path to the root;
      6. the computed roots equal ``old_root`` and ``new_root``.
    Raises `ProofError` naming the failed step.
    """
    # Step 1: the sizes describe an old tree that the new one could extend.
    if not 0 < old_size <= new_size:
        raise ProofError(
            f"consistency proof: sizes {old_size} -> {new_size} must satisfy "
            "0 < old size <= new size"
        )
    _check_proof_hashes(proof, "consistency proof")

    # Step 2: a tree is consistent with itself only.
    if old_size == new_size:
        if proof:
            raise ProofError(
                f"consistency proof: has {len(proof)} hashes, expected none "
                f"between equal sizes {old_size}"
            )
        if old_root != new_root:
            raise ProofError(
                f"consistency proof: trees of equal size {old_size} have "
                f"different roots {old_root.hex()} and {new_root.hex()}"
            )
        return

    # Step 3: growing the tree always needs at least one hash.
    if not proof:
        raise ProofError(
            f"consistency proof: is empty, but sizes {old_size} -> {new_size} differ"
        )
    _check_hash(old_root, "consistency proof: old root")
    _check_hash(new_root, "consistency proof: new root")

    # Step 4: fold the proof into the old and new roots together.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    node_index, last_index = old_size - 1, new_size - 1
    while node_index & 1:
        node_index, last_index = node_index >> 1, last_index >> 1
    old_computed = new_computed = path[0]
    for position, item in enumerate(path[1:], start=1):
        if last_index == 0:
            raise ProofError(
                f"consistency proof: has more hashes than the {position} that "
                f"sizes {old_size} -> {new_size} need"
            )
        if node_index & 1 or node_index == last_index:
            old_computed = node_hash(item, old_computed)
            new_computed = node_hash(item, new_computed)
            while not node_index & 1 and node_index != 0:
                node_index, last_index = node_index >> 1, last_index >> 1
        else:
            new_computed = node_hash(new_computed, item)
        node_index, last_index = node_index >> 1, last_index >> 1

    # Step 5: the proof reached the root of the new tree.
    if last_index != 0:
        raise ProofError(
            f"consistency proof: has {len(proof)} hashes, too few for sizes "
            f"{old_size} -> {new_size}"
        )

    # Step 6: both roots are the expected ones.
    if old_computed != old_root:
        raise ProofError(
            f"consistency proof: leads to old root {old_computed.hex()}, "
            f"expected {old_root.hex()} for size {old_size}"
        )
    if new_computed != new_root:
        raise ProofError(
            f"consistency proof: leads to new root {new_computed.hex()}, "
            f"expected {new_root.hex()} for size {new_size}"
        )


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [low, high) whose roots make PATH(index, D[size]), from
    the leaf up (RFC 9162 section 2.1.3.1): at each level, the half of the
    tree that does not hold the leaf."""
    ranges: list[tuple[int, int]] = []
    low, high = 0, size
    while high - low > 1:
        split = low + _largest_power_of_two_below(high - low)
        if index < split:
            ranges.append((split, high))
            high = split
        else:
            ranges.append((low, split))
            low = split
    return ranges[::-1]


def _consistency_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [low, high) whose roots make PROOF(old_size, D[size])
    (RFC 9162 section 2.1.4.1)."""
    # SUBPROOF(m, D[low:high], complete), unrolled: each level adds one
    # subtree after the proof of the level below it.
    upper: list[tuple[int, int]] = []
    low, high, complete = 0, size, True
    while old_size - low != high - low:
        split = low + _largest_power_of_two_below(high - low)
        if old_size <= split:
            upper.append((split, high))
            high = split
        else:
            upper.append((low, split))
            low, complete = split, False
    base = [] if complete else [(low, high)]
    return base + upper[::-1]


def _largest_power_of_two_below(n: int) -> int:
    """Return the largest power of two strictly less than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_root(leaf_hashes: Sequence[bytes], low: int, high: int) -> bytes:
    """Return MTH(D[low:high]) without copying the slice."""
    compact = CompactRange()
    for index in range(low, high):
        compact.append(leaf_hashes[index])
    return compact.root()


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        found = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, found {found}")


def _check_proof_hashes(proof: Sequence[bytes], what: str) -> None:
    for position, item in enumerate(proof):
        _check_hash(item, f"{what}: hash {position}")
