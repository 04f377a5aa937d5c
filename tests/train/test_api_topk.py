"""An OpenAI-compatible teacher's top_logprobs fill the top-k for token-level KD of a generate task, over real
HTTP against a server on 127.0.0.1 that answers as vLLM does (a real tiny model, greedy, each token's text,
bytes, log-probability and top alternatives): mapped to the student's ids when it shares the teacher's tokenizer,
compared by text (ULD) when it does not."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml

from distil.errors import TrainError
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from distil.teachers.openai_compat import Completion, written_first
from distil.train import trainer as T
from distil.train.api_topk import decoded_vocabulary, teacher_ends
from distil.train.batches import curated_splits, generate_examples
from tests.conftest import ASSETS, TINY_TOKENIZER
from tests.teachers.openai_server import RunningServer, ServerState
from tests.train.conftest import generate_records, write_curated, write_spec

torch.set_num_threads(1)
TOP = 5
LICENCE = {
    "name": "Apache-2.0",
    "terms": "test server",
    "distillation_permitted": "yes",
    "reviewed_by": "val",
    "reviewed_at": "2026-11-01",
}


def student_config(tokenizer) -> dict:  # noqa: ANN001
    return {
        "config": {
            "model_type": "llama",
            "tokenizer": str(tokenizer),
            "vocab_size": 512,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        }
    }


def api_project(tmp_path, name: str, base_url: str, student: dict, **distillation):  # noqa: ANN001, ANN003
    """A generate project whose teacher is the server, its inputs labelled over HTTP (`label_new_inputs`, the
    path `distil generate` takes) and curated as records."""
    from distil.data.generate import label_new_inputs

    spec_path = write_spec(
        tmp_path / name,
        tmp_path,
        kind="generate",
        train={"epochs": 2, "alpha": 0.5, **({"distillation": distillation} if distillation else {})},
        student=student,
    )
    data = yaml.safe_load(spec_path.read_text())
    data["task"]["max_new_tokens"] = 6
    data["teachers"] = [{"id": "api", "source": f"openai:{base_url}#tiny", "top_logprobs": TOP, "licence": LICENCE}]
    spec_path.write_text(yaml.safe_dump(data))
    project = load_project(spec_path)
    lock_gate(project, project.spec.roles.sponsor)  # no teacher is asked anything before the gate is locked
    inputs = [r.input for r in generate_records(14)]
    records, _ = label_new_inputs(project, inputs, source="synthetic")
    write_curated(spec_path, records[:10], records[10:])
    return load_project(spec_path)


@pytest.fixture(scope="module")
def server(tiny_teacher_dir):
    from distil.teachers.loading import load_causal_lm

    model, tokenizer, _ = load_causal_lm(f"hf:{tiny_teacher_dir}")
    # a random model writes blank lines; keep it to words after a space, as a trained model's answers read
    words = [i for i in range(len(tokenizer)) if re.fullmatch(r" [A-Za-z]+", tokenizer.decode([i]))]
    others = torch.ones(model.get_output_embeddings().weight.shape[0], dtype=torch.bool)
    others[words] = False
    with torch.no_grad():
        model.get_output_embeddings().weight[others] = 0.0
        model.get_output_embeddings().weight[words] *= 4.0  # and sure of them, as a trained model is
    with RunningServer(ServerState(model=model, tokenizer=tokenizer)) as running:
        yield running


def test_records_keep_the_written_token_first_with_its_alternatives(tmp_path, server):
    project = api_project(tmp_path, "rec", server.base_url, student_config(TINY_TOKENIZER))
    body = server.state.bodies[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == TOP
    records = curated_splits(project).splits["train"]
    assert all(r.topk_tokens and len(r.topk_tokens) == len(r.topk_logprobs) for r in records)
    r = records[0]
    assert "".join(row[0] for row in r.topk_tokens).strip() == r.teacher_text
    assert all(len(row) == TOP for row in r.topk_tokens) and r.topk_ids is None
    assert all(lp[0] == max(lp) for lp in r.topk_logprobs)  # greedy: the written token is the most likely


def test_same_tokenizer_maps_the_servers_tokens_to_the_students_ids(tmp_path, server):
    from transformers import AutoTokenizer

    project = api_project(tmp_path, "ids", server.base_url, student_config(TINY_TOKENIZER))
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    examples = generate_examples(curated_splits(project).splits["train"], tokenizer, project.spec.train.max_length)
    from distil.train.api_topk import attach_api_topk

    attach_api_topk(examples, tokenizer, project.spec.train.max_length, by_text=False)
    assert examples.has_topk and not examples.has_aligned
    # where the server's row was taken, its ids are the served model's own top-5 there, and the first is the text's
    model, served = server.state.model, server.state.tokenizer
    checked = 0
    for i in range(4):
        ids, logprobs = examples.topk(i)
        body = next(b for b in server.state.bodies if examples.inputs[i] in b["messages"][-1]["content"])
        prompt = served.apply_chat_template(body["messages"], add_generation_prompt=True, return_dict=True)["input_ids"]
        answer = examples.answer_ids[i]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(prompt) + answer[:-1]])).logits[0, len(prompt) - 1 :]
        for p in range(len(answer)):
            if logprobs[p, 1] == -np.inf:
                continue  # one-hot: EOS, which the server does not send
            assert ids[p, 0] == answer[p]
            assert set(ids[p].tolist()) == set(logits[p].topk(TOP).indices.tolist())
            np.testing.assert_allclose(
                np.sort(logprobs[p]), np.sort(torch.log_softmax(logits[p], -1).topk(TOP).values.numpy()), atol=1e-4
            )
            checked += 1
    assert checked >= 8
    run = T.train_run(project, baseline=False)
    config = json.loads((project.runs_dir / run.run_id / "train_config.json").read_text())
    assert run.finished and config["generate_kd"] == "topk"


def test_another_tokenizer_goes_through_uld_and_is_refused_by_id(tmp_path, server):
    metaspace = ASSETS / "tiny-metaspace"
    by_id = api_project(tmp_path, "no", server.base_url, student_config(metaspace))
    with pytest.raises(TrainError, match="the API teacher's tokens are not the student's"):
        T.train_run(by_id, baseline=False)
    project = api_project(tmp_path, "uld", server.base_url, student_config(metaspace), loss="uld")
    run = T.train_run(project, baseline=False)
    config = json.loads((project.runs_dir / run.run_id / "train_config.json").read_text())
    assert run.finished and config["generate_kd"] == "uld"


def test_written_first_and_teacher_ends():
    c = Completion(
        " ab", [{"a": -0.1, "b": -2.0, "c": -3.0}, {"x": -0.5, "y": -0.9, "b": -1.0}], [-0.1, -2.5], [" a", "b"]
    )
    tokens, logprobs = written_first(c)
    assert tokens == [[" a", "a", "b"], ["b", "x", "y"]]  # a sampled token outside the top list comes first
    assert logprobs == [[-0.1, -0.1, -2.0], [-2.5, -0.5, -0.9]]
    assert teacher_ends(["Hel", "lo", " you"], " Hello you") == [4, 6, 10]
    assert teacher_ends([" Hel", "lo"], " Hello") == [4, 6]
    assert teacher_ends(["Bye"], " Hello") is None


def test_decoded_vocabulary_leaves_out_texts_several_ids_share():
    from transformers import AutoTokenizer

    vocabulary = decoded_vocabulary(AutoTokenizer.from_pretrained(str(TINY_TOKENIZER)))
    assert "\ufffd" not in vocabulary and vocabulary[" is"] > 0
