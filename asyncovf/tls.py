"""TLS contexts built once, off the event loop.

``ssl.create_default_context`` reads the CA files (tens of milliseconds) and
so blocks; building one per connection, login or upload would stall the loop
every time. A :class:`ContextCache` builds each context once, in a worker
thread, and hands the same object to everyone after: vCenter's endpoint
(``vsphere/soap.py``) and package web servers (``ovf/blobs.py``) each hold one.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable

import anyio.to_thread


class ContextCache:
    """TLS contexts by name, each built once, however many tasks ask at the same time.

    Building happens under a thread lock in a worker thread (:meth:`get_async`),
    so concurrent first callers wait for one build, never on the event loop.
    It holds no loop-bound primitive, so an Endpoint may outlive an event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[str, ssl.SSLContext] = {}

    def get(self, name: str, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """The context ``name``, built by ``build`` the first time (blocking then)."""
        context = self._built.get(name)
        if context is None:
            with self._lock:
                context = self._built.get(name)
                if context is None:
                    context = self._built[name] = build()
        return context

    async def get_async(self, name: str, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """Like :meth:`get`; a context not built yet is built in a worker thread."""
        context = self._built.get(name)
        if context is None:
            context = await anyio.to_thread.run_sync(self.get, name, build)
        return context


__all__ = ["ContextCache"]
