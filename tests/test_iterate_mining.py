"""Which items `distil iterate` shows the teacher: the student's disagreements on validation and the probe pool,
and near misses of the slices where it does worse than the floor and than elsewhere — never a whole slice."""

from __future__ import annotations

from types import SimpleNamespace

from distil.data.records import Record
from distil.evaluate.predictions import paired, prediction_rows, write_predictions
from distil.iterate import mine_failures, weak_slices

LABELS = ["billing", "technical", "account"]


def one_hot(index: int, sure: float = 0.9) -> list[float]:
    rest = (1.0 - sure) / (len(LABELS) - 1)
    return [sure if i == index else rest for i in range(len(LABELS))]


def write_run(tmp_path, rows_by_split):
    """rows_by_split: split -> [(input, tone, teacher index, student index, student's probability of its label)]."""
    rows = []
    for split, items in rows_by_split.items():
        records = [Record(input=text, source="synthetic", tags={"tone": tone}, split=split) for text, tone, *_ in items]
        teacher = [one_hot(t) for _, _, t, _, _ in items]
        student = [one_hot(s, sure) for _, _, _, s, sure in items]
        rows += prediction_rows(split, records, "teacher", teacher, LABELS, recorded=True)
        rows += prediction_rows(split, records, "student", student, LABELS)
    path = tmp_path / "predictions.parquet"
    write_predictions(path, rows)
    return SimpleNamespace(predictions=path)


def items(prefix, tone, wrong, right, sure_of_right=(0.9,)):
    """``wrong`` disagreements then ``right`` agreements (student sureness cycling through ``sure_of_right``)."""
    out = [(f"{prefix} wrong {i}", tone, 0, 1, 0.9) for i in range(wrong)]
    out += [(f"{prefix} right {i}", tone, 0, 0, sure_of_right[i % len(sure_of_right)]) for i in range(right)]
    return out


def test_every_slice_under_the_floor_adds_near_misses_only_where_the_student_does_worse_than_elsewhere(tmp_path):
    # urgent 4 of 10 wrong (0.6), calm 2 of 10 wrong (0.8): both under the 0.85 floor, overall 0.7
    validation = items("urgent", "urgent", 4, 6, sure_of_right=(0.95, 0.4, 0.9, 0.5, 0.99, 0.6))
    validation += items("calm", "calm", 2, 8, sure_of_right=(0.34,))
    run = write_run(tmp_path, {"validation": validation})
    assert weak_slices(paired(run.predictions, "validation", "student"), 0.85) == {("tone", "urgent"): 0.6}

    failures = mine_failures(run, floor=0.85)
    disagreements = [f.input for f in failures if f.reason == "student disagrees with the teacher"]
    assert sorted(disagreements) == sorted([f"urgent wrong {i}" for i in range(4)] + ["calm wrong 0", "calm wrong 1"])
    near = [f.input for f in failures if f.reason.startswith("slice below the floor")]
    # as many as urgent's 4 disagreements, the least sure first; calm's unsure agreements are not shown
    assert near == ["urgent right 1", "urgent right 3", "urgent right 5", "urgent right 2"]
    assert len(failures) == 10 < len(validation)


def test_a_weak_test_slice_changes_nothing_the_mined_splits_do_not_show(tmp_path):
    validation = items("v", "calm", 1, 9) + items("u", "urgent", 0, 10)
    test = items("t", "urgent", 10, 0)  # the locked test split: never read to pick what to show the teacher
    run = write_run(tmp_path, {"validation": validation, "test": test})
    failures = mine_failures(run, floor=0.95)
    assert [f.input for f in failures] == ["v wrong 0", "v right 0"]  # calm (0.9) is the weak slice, not urgent


def test_no_floor_mines_the_disagreements_alone(tmp_path):
    run = write_run(tmp_path, {"validation": items("a", "urgent", 3, 7), "probe": items("p", "calm", 1, 4)})
    assert [f.input for f in mine_failures(run, floor=None)] == ["a wrong 0", "a wrong 1", "a wrong 2", "p wrong 0"]
