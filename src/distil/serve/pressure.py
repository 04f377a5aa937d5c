"""How far behind the event loop runs, measured all the time, so the server can refuse work before it saturates.

Every request, every finished model pass and every probe is a callback the event loop runs in turn; when more
arrive than one core can run, each waits behind all the others that are ready. With 200 clients on two busy
cores the loop ran 70–140 ready callbacks per turn, 60–120 ms a turn, so a probe or an answer whose model work
was done waited that long for its turn. Refusing a request costs the loop a fraction of answering one (no body
parsed, no model, no response model), and a refused client waits its ``Retry-After``, so shedding new model
requests while the loop is behind keeps every turn short: what Node's ``under-pressure`` (``maxEventLoopDelay``)
does for fastify.

The lag is measured as a timer's lateness: a task sleeps ``every_s`` and notes how much later than that it woke.
That is the wait a callback made ready at the same moment had behind the others, and it reads back to 0 within a
tick of the loop catching up.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """The event loop's lag, as of the last tick; ``over`` once it passed ``bound_s``."""

    def __init__(self, bound_s: float, every_s: float = 0.025):
        self.bound_s = bound_s
        self.every_s = every_s
        self.lag_s = 0.0

    @property
    def over(self) -> bool:
        return self.lag_s > self.bound_s

    async def watch(self) -> None:
        """Forever: sleep ``every_s`` on the running loop and note how late the wake-up came."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.every_s)
            self.lag_s = max(0.0, loop.time() - start - self.every_s)
