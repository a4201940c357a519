"""Glue between the engine's runtime thread and asyncio."""

import asyncio

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


class Changes:
    """An async iterator of a node's changes (`node.changes()`); the
    listener is removed by `aclose()` or when the iterator is collected."""

    def __init__(self, node):
        self._node = node
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def deliver(change, queue=self._queue, loop=loop):
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
