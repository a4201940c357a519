"""Glue between the engine's runtime thread and asyncio."""

import asyncio
import threading

from ._facsimile import ChangesOverflowError

# How often a waiting `lock_async` runs the node's timers (seconds): the
# blocking `lock`'s interval.
TICK = 0.05


def resolve(future, ok, value):
    """Completes an asyncio future from the runtime thread's result."""
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class PendingLockAwaitable:
    """What `lock_async` and `request_async` return: awaitable (to the
    guard) and an async context manager (released on exit)."""

    def __init__(self, node, obj, wait):
        self._node = node
        self._obj = obj
        self._wait = wait
        self._guard = None

    def __await__(self):
        return self._acquire().__await__()

    async def _acquire(self):
        loop = asyncio.get_running_loop()
        pending = self._node._pending_lock(self._obj, self._wait)
        try:
            while True:
                woken = asyncio.Event()
                guard = pending.poll(loop, woken.set)
                if guard is not None:
                    return guard
                # Runs the node's timers meanwhile, as the blocking `lock`
                # does: on a transport of the user's, nothing else may
                # call into the node, and failure detection must still
                # free the lock of a holder that died.
                try:
                    await asyncio.wait_for(woken.wait(), TICK)
                except asyncio.TimeoutError:
                    self._node.tick()
        finally:
            # Withdraws the request when the task was cancelled.
            pending.cancel()

    async def __aenter__(self):
        self._guard = await self
        return self._guard

    async def __aexit__(self, *exc):
        self._guard.__exit__(*exc)
        return False


# What `aclose` queues: it wakes a task waiting for a change.
_CLOSED = object()
# What is queued in place of the first change a full queue refused.
_OVERFLOW = object()


class _Bound:
    """How many changes wait in a `Changes` queue: counted as they are
    delivered (on whichever thread applies them) and as they are read."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self.lock = threading.Lock()
        self.waiting = 0
        self.overflowed = False


class Changes:
    """An async iterator of a node's changes (`node.changes()`); the
    listener is removed by `aclose()` or when the iterator is collected.

    At most `maxsize` changes wait to be read (no bound for 0 or less): an
    iterator made and not read, or read slower than the node changes, would
    otherwise hold every change. A change that finds the queue full is not
    kept, nor any after it; the iteration gives those it kept, then raises
    ChangesOverflowError and ends, so that no change is missed unknown."""

    def __init__(self, node, maxsize):
        self._node = node
        self._queue = asyncio.Queue()
        self._bound = bound = _Bound(maxsize)
        loop = asyncio.get_running_loop()

        # Holds no reference to the iterator: the node's listener must not
        # keep it from being collected (and its listener removed).
        def deliver(change, queue=self._queue, loop=loop, bound=bound):
            with bound.lock:
                if bound.overflowed:
                    return
                if 0 < bound.maxsize <= bound.waiting:
                    bound.overflowed = True
                    change = _OVERFLOW
                else:
                    bound.waiting += 1
            try:
                loop.call_soon_threadsafe(queue.put_nowait, change)
            except RuntimeError:
                pass  # the loop is closed

        self._deliver = deliver
        node.on("change", deliver)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._node is None:
            raise StopAsyncIteration
        change = await self._queue.get()
        if change is _CLOSED:
            # For the next waiter, if another task waits too.
            self._queue.put_nowait(_CLOSED)
            raise StopAsyncIteration
        if change is _OVERFLOW:
            await self.aclose()
            raise ChangesOverflowError(
                f"more than {self._bound.maxsize} changes waited to be read: those after "
                "were not kept and the iteration ended; read the store for its state "
                "and iterate node.changes() anew (or give it a larger maxsize)"
            )
        with self._bound.lock:
            self._bound.waiting -= 1
        return change

    async def aclose(self):
        """Removes the listener and ends the iteration, that of a task
        waiting in `__anext__` too."""
        if self._node is not None:
            self._node.off("change", self._deliver)
            self._node = None
            self._queue.put_nowait(_CLOSED)

    def __del__(self):
        node = self._node
        if node is not None:
            node.off("change", self._deliver)
