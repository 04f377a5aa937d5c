"""`distil iterate --untargeted`, the control arm of a targeted round: new inputs written the plain way (the seeds
under the writing header, no failure shown), screened like a targeted round's, as many as asked for."""

from __future__ import annotations

import pytest
import torch

from distil.cli import main
from distil.data.written import MALFORMED
from distil.iterate import MAX_ASK_FACTOR, plain_inputs
from distil.spec.io import load_project
from distil.teachers.registry import build_teacher
from tests.data.helpers import SEEDS, make_project


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _project(tmp_path, tiny_teacher_dir, **filters):
    base = {"min_words": 1, "min_letter_share": 0.0, "min_confidence": 0.0}
    return load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}", filters={**base, **filters}))


def _spied(project):
    """The real tiny teacher, with every prompt it is asked to continue kept."""
    teacher = build_teacher(project)
    asked: list[str] = []
    real = teacher.generate

    def spy(prompts, **params):  # noqa: ANN001, ANN202
        asked.extend(prompts)
        return real(prompts, **params)

    teacher.generate = spy
    return teacher, asked


def test_plain_inputs_are_written_from_the_seeds_under_the_header_and_as_many_as_asked(tmp_path, tiny_teacher_dir):
    project = _project(tmp_path, tiny_teacher_dir)
    teacher, asked = _spied(project)
    screened = plain_inputs(project, teacher, 5)
    assert len(screened.kept) == 5 and len(asked) == 5  # lenient filters: the first five asked are kept
    seeds = {" ".join(text.split()) for text, _ in SEEDS}
    for prompt in asked:
        header, *shown, last = prompt.split("\n")
        assert header.startswith("Support tickets for the ") and last == "-"
        assert shown and all(line.removeprefix("- ") in seeds for line in shown)  # only seeds are shown
    assert not {i.input for i in screened.kept} & seeds


def test_plain_inputs_ask_again_from_the_cache_while_screening_leaves_too_few(tmp_path, tiny_teacher_dir):
    project = _project(tmp_path, tiny_teacher_dir, min_words=1000)  # every written input is malformed
    teacher, asked = _spied(project)
    screened = plain_inputs(project, teacher, 3)
    assert screened.kept == [] and screened.dropped[MALFORMED] > 3
    # asked for 3, then 6, then 12: each time only the new slots reach the teacher, the first come from the cache
    assert len(asked) == MAX_ASK_FACTOR * 3


def test_untargeted_and_from_traffic_are_refused_together(triage_project, capsys):
    assert main(["iterate", "--untargeted", "--from-traffic", "--spec", str(triage_project)]) == 2
    assert "--untargeted and --from-traffic" in capsys.readouterr().err


def test_a_control_round_says_it_wrote_from_the_seeds_not_from_failures():
    from distil.cli.cadence import round_line
    from distil.iterate import IterationResult

    result = IterationResult(round=2, from_run="r1", source="untargeted", targets=4, dropped={MALFORMED: 1}, labelled=4)
    assert round_line(result) == (
        "round 2: untargeted (the control): 4 new inputs written from the seeds (1 dropped before labelling: 1 "
        "malformed), 4 labelled"
    )


@pytest.mark.slow
def test_an_untargeted_round_labels_plain_inputs_retrains_and_is_recorded_as_the_control(tmp_path, tiny_teacher_dir):
    from distil.cadence import run_cadence
    from distil.data.records import read_records
    from distil.iterate import iterate_round
    from distil.spec.gate import lock_gate
    from tests.test_cadence import tiny_triage

    path = tiny_triage(tmp_path / "p", tiny_teacher_dir)
    project = load_project(path)
    lock_gate(project, project.spec.roles.sponsor)
    first_run = run_cadence(project, requests=20, threads=1).run_id
    raw = project.data_dir / "raw"
    before = set(raw.glob("*.parquet"))

    result = iterate_round(load_project(path), budget=4, untargeted=True, seed=7, requests=20, threads=1)
    assert result.failures and 0 < result.labelled <= 4  # mined for the row, not shown to the teacher
    (shard,) = set(raw.glob("*.parquet")) - before
    assert shard.name.startswith("synthetic-")  # curated as plain synthetic data
    assert {r.source for r in read_records(shard)} == {"synthetic"}
    assert result.cadence is not None and result.cadence.run_id != first_run  # retrained on it
    (row,) = [e.payload for e in project.ledger.events(kind="iteration")]
    assert row["source"] == "untargeted" and row["labelled"] == result.labelled
