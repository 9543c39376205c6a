"""Registering a file's members while the file is read, in a thread of its own, so the
store's work overlaps DuckDB's (see :class:`MemberFeed`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from memberwise.events.timeline import busy

MembersCallback = Callable[[list[str]], None]
#: Member ids handed to ``on_members`` per call (at most; the last call of a file gets the rest).
MEMBER_CHUNK = 50_000


class RegistrationFailed(Exception):
    """``on_members`` raised: the file's events are not published and the file is not
    committed, so a re-run registers the members again."""


class MemberFeed:
    """Registers the members of a file's good rows while the file is read: the pass hands it
    each batch's distinct member ids (in file order); a thread of its own keeps those not seen
    before in this file and calls ``on_members`` with up to MEMBER_CHUNK of them at a time
    (sorted, so concurrent transactions lock rows in one order). The store's work (SQLite or
    PostgreSQL) then overlaps DuckDB's instead of following it. The first error of
    ``on_members`` stops the feed and is raised by :meth:`finish`."""

    def __init__(self, on_members: MembersCallback) -> None:
        self.on_members = on_members
        self.queue: queue.SimpleQueue[pa.Array | None] = queue.SimpleQueue()
        self.error: Exception | None = None
        self.stopped = False
        self.registered = 0
        self.thread = threading.Thread(target=self._run, name="register-members", daemon=True)
        self.thread.start()

    def put(self, members: pa.Array) -> None:
        if len(members) and self.error is None:
            self.queue.put(members)

    def finish(self) -> None:
        """Wait until every id handed over is registered; raise the first error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise RegistrationFailed(f"registering members failed: {self.error}") from self.error

    def stop(self) -> None:
        """The pass failed: register nothing more, wait for the thread, ignore its error."""
        self.stopped = True
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        with busy("register"):  # SQLite works in this thread; a PostgreSQL server does not
            try:
                self._register()
            except Exception as exc:  # never expected; finish() fails the file with it
                self.error = exc

    def _register(self) -> None:
        seen: pa.Array = pa.array([], pa.string())
        fresh: list[pa.Array] = []
        waiting = 0
        while (members := self.queue.get()) is not None:
            if self.error is not None or self.stopped:
                continue  # drain: the pass still hands batches over until it ends
            new = members.filter(pc.invert(pc.is_in(members, value_set=seen)))
            if not len(new):
                continue
            seen = pa.concat_arrays([seen, new])
            fresh.append(new)
            waiting += len(new)
            # A full chunk goes at once; a smaller one when no batch is waiting, so the ids
            # left for the end of the pass (when everything else waits for them) are few.
            if waiting >= MEMBER_CHUNK or (waiting >= MEMBER_CHUNK // 10 and self.queue.empty()):
                self._send(fresh)
                fresh, waiting = [], 0
        if fresh and self.error is None and not self.stopped:
            self._send(fresh)

    def _send(self, fresh: list[pa.Array]) -> None:
        ids = sorted(pa.concat_arrays(fresh).to_pylist())
        try:
            for start in range(0, len(ids), MEMBER_CHUNK):
                self.on_members(ids[start : start + MEMBER_CHUNK])
                self.registered += min(MEMBER_CHUNK, len(ids) - start)
        except Exception as exc:  # the store's own error; the file stays uncommitted
            self.error = exc
