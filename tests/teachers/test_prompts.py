"""One generation prompt: labelling (both teacher kinds), evaluation and the training cache show the
teacher the same text for a generate task."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from distil.data.records import Record
from distil.evaluate.run import _teacher_under_test
from distil.spec.io import Project, load_project
from distil.teachers.hf_local import HFLocalTeacher
from distil.teachers.openai_compat import OpenAICompatTeacher
from distil.teachers.prompts import generation_prompt, in_chat_template
from distil.train.logit_cache import teacher_prompt_ids
from tests.data.helpers import make_project

INPUTS = ["the printer is on fire", "refund please"]


class PromptRecorder:
    """Stands in for the loaded teacher in the evaluation's predict call; keeps what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def generate(self, prompts, **_):
        self.asked.extend(prompts)
        return ["-" for _ in prompts]


def generate_project(tmp_path, source: str, instruction: str) -> Project:
    project = load_project(make_project(tmp_path / "p", source))
    task = project.spec.task.model_copy(
        update={"kind": "generate", "instruction": instruction, "labels": [], "calibrate": False}
    )
    return Project(project.spec_path, project.spec.model_copy(update={"task": task}))


@pytest.mark.parametrize("instruction", ["Summarise this ticket in five words: {input}", "Answer the customer."])
def test_every_path_gives_the_teacher_the_same_generation_prompt(tmp_path, tiny_teacher_dir, instruction):
    project = generate_project(tmp_path, f"hf:{tiny_teacher_dir}", instruction)
    task = project.spec.task
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    assert tokenizer.chat_template  # the tiny teacher has one, so the chat wrapping is exercised too
    expected = [generation_prompt(instruction, x) for x in INPUTS]
    assert expected[0] != INPUTS[0] if "{input}" in instruction else expected == INPUTS

    local = HFLocalTeacher(project.spec.teachers[0], task)
    api = OpenAICompatTeacher(
        project.spec.teachers[0].model_copy(update={"source": "openai:http://127.0.0.1:9/v1#m"}), task
    )
    assert [local.classify_prompt(x) for x in INPUTS] == expected  # what `distil generate` asks the local teacher
    assert [api.classify_prompt(x) for x in INPUTS] == expected  # ... and an API teacher

    recorder = PromptRecorder()
    held_out = [Record(input=x, source="seed", teacher_text="-") for x in INPUTS]
    _teacher_under_test(project, held_out).predict(recorder, INPUTS)  # what `distil evaluate` asks
    assert recorder.asked == expected

    # the training cache scores the answers after the same prompt, in the chat template the teacher wrote in
    sent = [tokenizer(local._chat_text(p, chat=True), add_special_tokens=False).input_ids for p in expected]
    assert teacher_prompt_ids(tokenizer, instruction, INPUTS) == sent
    assert tokenizer.decode(sent[0]) == in_chat_template(tokenizer, expected[0])
