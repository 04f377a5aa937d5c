"""The heap a server starts with is kept out of the collector's passes while it serves; free memory is released
once after each burst of work, never while work is going on, and not when idle."""

from __future__ import annotations

import asyncio
import gc

import httpx
import numpy as np

from distil.serve.memory import trim_after_bursts
from distil.serve.runs import ServedModel
from distil.serve.server import create_app
from tests.serve.conftest import LABELS, running_server


class SureModel:
    labels = LABELS

    def label_distribution(self, inputs):
        return np.tile([0.9, 0.05, 0.05], (len(inputs), 1))


def _tracked(obj: object) -> bool:
    """Whether a collection can walk ``obj`` (it is in one of the collector's generations, not the frozen one)."""
    return any(o is obj for o in gc.get_objects())


def test_the_objects_a_server_starts_with_are_out_of_the_collectors_passes_until_it_stops():
    model = SureModel()
    assert _tracked(model)
    with running_server(create_app(ServedModel("m", "classify", LABELS, model, None, 0.0))) as (url, _):
        assert httpx.post(f"{url}/v1/classify", json={"input": "a ticket"}, timeout=30).status_code == 200
        gc.collect()  # a full collection now walks what serving allocated, not the model loaded before
        assert gc.get_freeze_count() > 0 and not _tracked(model)
    assert gc.get_freeze_count() == 0 and _tracked(model)  # handed back to the collector on shutdown


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
