"""A stopping proxy ends its own connections, for ``run``/``serve`` and ``mitmdump -s`` alike.

``Master.shutdown()`` leaves the listening sockets and the client connections open; the
event loop's end (``asyncio.run``) then cancels each connection's task. On Python 3.11 and
3.12 (3.13 checks first) asyncio's stream callback asks that cancelled task for its
exception, and logs a ``CancelledError`` traceback ("Exception in callback
StreamReaderProtocol…") for every connection still open: the wrapped program's keep-alive
ones, on nearly every stop. Ended here, their tasks finish as mitmproxy expects.
"""

from __future__ import annotations

import asyncio
import time

#: How long a stopping proxy waits for its open client connections to end.
CLOSE_TIMEOUT_S = 2.0


async def end_connections(timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Stop listening, close every client connection, and wait (bounded) until they end."""
    from mitmproxy import ctx

    server = ctx.master.addons.get("proxyserver")
    await server.servers.update([])
    for handler in list(server.connections.values()):
        if handler.client in handler.transports:  # else it is ending already
            handler.close_connection(handler.client)
    deadline = time.monotonic() + timeout
    while server.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


class EndConnections:
    """The same as an addon of its own, after the meter, for ``mitmdump -s``."""

    async def done(self) -> None:
        await end_connections()
