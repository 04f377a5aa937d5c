"""Free memory is released once after each burst of work, never while work is going on, and not when idle."""

from __future__ import annotations

import asyncio

from distil.serve.memory import trim_after_bursts


async def _until(predicate, what: str) -> None:
    for _ in range(600):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_free_memory_is_released_once_after_a_burst_and_never_while_busy():
    state = {"done": 0, "busy": False, "looks": 0}
    released: list[int] = []

    def work_done() -> int:
        state["looks"] += 1
        return state["done"]

    async def scenario() -> None:
        release = lambda: released.append(state["done"])  # noqa: E731
        task = asyncio.create_task(trim_after_bursts(work_done, lambda: state["busy"], 0.01, release))
        await asyncio.sleep(0.1)
        assert released == []  # no work yet: nothing to give back
        state.update(done=5, busy=True, looks=0)
        await _until(lambda: state["looks"] >= 5, "five looks while busy")
        assert released == []  # work going on
        state["busy"] = False
        await _until(lambda: released == [5], "a release after the burst")
        state["looks"] = 0
        await _until(lambda: state["looks"] >= 5, "five looks while idle")
        assert released == [5]  # idle looks after a release do not release again
        state["done"] = 9
        await _until(lambda: released == [5, 9], "a release after the next burst")
        task.cancel()

    asyncio.run(scenario())
