"""Group commit: the units of work of many threads, one transaction per group.

A thread hands its unit of work to `GroupCommitter.submit`, which queues it.
If no thread is committing, the caller becomes the leader: it takes what is
queued (oldest first, at most `limit` units), hands the group to
`commit_group`, which applies the units in one transaction and records each
one's result or error, then wakes their callers. While it commits, new units
queue up and form the next group. Once the leader's own unit is done it passes
the lead to the oldest waiting caller, if any.

Invariants:
- a caller returns (or raises) only after the transaction of its group has
  committed (or failed): durability is that of one transaction per write;
- units are applied in the order they were queued, one group at a time;
- a lone caller leads at once: there is no timer, and no wait for company;
- a group that fails as a whole fails every unit in it, and an interrupted
  leader still wakes its group and passes the lead on, so no caller hangs;
- a unit's work runs on the leader's thread, and may not submit another unit
  (it would wait for its own group): that raises `RuntimeError`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from gateway.errors import StoreError

log = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")


class Unit(Generic[C, T]):
    """One caller's work and, once its group is committed, its outcome."""

    __slots__ = ("_error", "_finished", "_result", "_wake", "work")

    def __init__(self, work: Callable[[C], T]) -> None:
        self.work = work
        self._result: T | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._wake = threading.Event()

    def succeed(self, result: T) -> None:
        """Record what the work returned (kept unless its group then fails)."""
        self._result = result

    def fail(self, error: BaseException) -> None:
        """Record why the work, or the commit of its group, failed."""
        self._error = error

    def _outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


class GroupCommitter(Generic[C]):
    """Commits the units of concurrent callers in groups of at most `limit`.

    `commit_group` applies a group in one transaction, calling `succeed` or
    `fail` on each unit; raising fails the whole group.
    """

    def __init__(
        self, commit_group: Callable[[Sequence[Unit[C, Any]]], None], limit: int
    ) -> None:
        if limit < 1:
            raise ValueError(f"a group holds at least 1 unit, not {limit}")
        self._commit_group = commit_group
        self._limit = limit
        self._lock = threading.Lock()
        self._queue: deque[Unit[C, Any]] = deque()
        self._leading = False
        self._committing = threading.local()

    @property
    def queued(self) -> int:
        """Units waiting for a group (not counting the group being committed)."""
        with self._lock:
            return len(self._queue)

    def submit(self, work: Callable[[C], T]) -> T:
        """Run `work` in the next group's transaction; return once committed.

        Returns what `work` returned, or raises what it raised, or what the
        commit of its group raised.
        """
        if getattr(self._committing, "group", False):
            raise RuntimeError(
                "a unit of work submitted another; it would wait for its own group"
            )
        unit: Unit[C, T] = Unit(work)
        with self._lock:
            self._queue.append(unit)
            follow, self._leading = self._leading, True
        if follow:
            unit._wake.wait()
        if not unit._finished:
            self._lead(unit)
        return unit._outcome()

    def _lead(self, own: Unit[C, Any]) -> None:
        """Commit groups until `own` is done, then pass the lead on."""
        try:
            while not own._finished:
                with self._lock:
                    size = min(self._limit, len(self._queue))
                    group = [self._queue.popleft() for _ in range(size)]
                    waiting = len(self._queue)
                self._commit(group)
                log.debug("committed a group of %d writes, %d waiting", size, waiting)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0]._wake.set()
                else:
                    self._leading = False

    def _commit(self, group: Sequence[Unit[C, Any]]) -> None:
        self._committing.group = True
        try:
            self._commit_group(group)
        except Exception as exc:
            for unit in group:
                unit.fail(exc)
        except BaseException as exc:
            for unit in group:
                unit.fail(
                    StoreError(
                        f"the thread committing this write was interrupted "
                        f"({type(exc).__name__}); the write may be lost"
                    )
                )
            raise
        finally:
            self._committing.group = False
            for unit in group:
                unit._finished = True
                unit._wake.set()
