"""Free memory is released once after each burst of work, never while work is going on, and not when idle."""

from __future__ import annotations

import asyncio

from distil.serve.memory import trim_after_bursts


def test_free_memory_is_released_once_after_a_burst_and_never_while_busy():
    state = {"done": 0, "busy": False}
    released: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(
            trim_after_bursts(lambda: state["done"], lambda: state["busy"], 0.01, lambda: released.append(state["done"]))
        )
        await asyncio.sleep(0.1)
        assert released == []  # no work yet: nothing to give back
        state.update(done=5, busy=True)
        await asyncio.sleep(0.1)
        assert released == []  # work going on
        state["busy"] = False
        await asyncio.sleep(0.1)
        assert released == [5]  # once after the burst, not on every look while idle
        state["done"] = 9
        await asyncio.sleep(0.1)
        assert released == [5, 9]
        task.cancel()

    asyncio.run(scenario())

