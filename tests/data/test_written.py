"""Inputs the teacher wrote in a targeted round are screened before labelling: near-copies of each other, of the
inputs they were written from, and the writing header itself are dropped, and counted."""

from __future__ import annotations

from distil.data.sources import InputItem
from distil.data.written import HEADER, KNOWN, MALFORMED, REPEAT, screen_written_inputs, writing_headers
from distil.spec.io import load_project


def test_near_copies_the_header_and_the_seeds_are_dropped_and_counted(triage_project):
    spec = load_project(triage_project).spec
    spec = spec.model_copy(
        update={"data": spec.data.model_copy(update={"filters": spec.data.filters.model_copy(update={"min_words": 3})})}
    )
    seed = "I was charged twice for my subscription this month"
    written = [
        "My invoice shows a charge I never agreed to for the premium plan",
        "My invoice shows a charge I never agreed to for the premium plan!",
        "my invoice shows a charge I never agreed to for the premium plan",
        "My invoice shows a charge I never agreed to, for the premium plan.",
        "My invoice shows a charge I never agreed to for the premium plan today",
        "My invoice shows a charge I never agreed to for the premium plans",
        writing_headers(spec)[0],  # the header itself
        writing_headers(spec)[0] + " refund please",  # the header with an item after it
        "I was charged twice for my subscription this month.",  # the seed again
        "refund",  # malformed: one word
        "The app crashes every time I open the settings page on my phone",
    ]
    screened = screen_written_inputs(spec, [InputItem(t, source="targeted") for t in written], known=[seed])
    assert [i.input for i in screened.kept] == [written[0], written[-1]]
    assert screened.dropped == {REPEAT: 5, HEADER: 2, KNOWN: 1, MALFORMED: 1}
    assert screened.n_dropped == len(written) - 2


def test_a_short_header_phrase_inside_an_ordinary_input_is_kept(triage_project):
    spec = load_project(triage_project).spec
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"synthetic_header": "Tickets {label}:"})})
    screened = screen_written_inputs(
        spec, [InputItem("my tickets billing page shows the wrong total", source="targeted")]
    )
    assert len(screened.kept) == 1 and not screened.dropped


def test_the_round_says_how_many_new_inputs_were_dropped_and_why():
    from distil.cli.cadence import round_line
    from distil.iterate import IterationResult

    result = IterationResult(round=1, from_run="r1", targets=2, dropped={REPEAT: 5, HEADER: 1}, labelled=2)
    assert round_line(result) == (
        "round 1: 0 failures mined from run r1, 2 new inputs (6 dropped before labelling: 5 near-duplicate of another "
        "new input, 1 repeats the writing header), 2 labelled"
    )
