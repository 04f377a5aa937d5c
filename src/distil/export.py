"""Export a run's student, and quantize it as a separate, separately evaluated step.

* ``safetensors``: the student folder as it is (weights, config, tokenizer, ``distil_task.json``).
* ``onnx``: for classify students, a graph from (input_ids, attention_mask) [B, S] (right-padded)
  to the label distribution [B, L]: a causal student's label rows of the LM head at each row's last
  real position (never the full vocabulary), or an encoder student's classification head. Runs with
  onnxruntime.
* ``--quantize int8``: onnxruntime dynamic quantization (int8 weights, activations quantized on the
  fly) of the ONNX graph. Quantizing changes the model, so it is evaluated on its own on the held-out
  test split — agreement with the teacher and with the float model — and recorded as an
  ``evaluation`` ledger row with variant ``quantized``, next to the distilled one.
* ``gguf``: causal Llama students as one GGUF file for llama.cpp and the runtimes built on it (see
  :mod:`distil.export_gguf`), float32 by default; ``--quantize f16|q8_0|q4_0`` writes that type instead,
  evaluated the same way (agreement with the teacher on the test split, read back through transformers' GGUF
  loader) and recorded as variant ``gguf-<type>`` with its size on disk. A float32 export is checked against
  PyTorch on the test split, like ONNX.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import DistilError, EvaluationError
from distil.export_eval import TEST, ScoringSet, classify_sets, compare_variant, predict_sets, variant_scores
from distil.files import replace_dir_atomic, write_json_atomic, write_text_atomic, write_with_atomic
from distil.runs import RunDir
from distil.serve.runs import served_run
from distil.spec.io import Project

FORMATS = ("safetensors", "onnx", "gguf")
QUANTIZATIONS = {"onnx": ("int8",), "gguf": ("f16", "q8_0", "q4_0")}
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MODEL_CARD = "README.md"


class ExportError(DistilError):
    """A run cannot be exported in the format asked for."""

    default_hint = "export classify students to onnx, Llama students to gguf, any student to safetensors"


@dataclass
class ExportResult:
    run_id: str
    format: str
    folder: Path
    files: list[Path]
    evaluation: dict[str, Any] | None = None  # the quantized model's, when quantized
    checks: dict[str, Any] = field(default_factory=dict)  # ONNX vs PyTorch on the held-out set


# --- ONNX graph of the label head --------------------------------------------------------------------


def _label_head_module(model: Any, label_token_ids: Sequence[int] | None):
    """``label_token_ids`` None: an encoder student, whose classification head is already over the labels."""
    import torch

    from distil.train.students import label_scores

    class LabelHead(torch.nn.Module):
        """input_ids, attention_mask [B, S] -> label probabilities [B, L] (float32)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            ids = None if label_token_ids is None else torch.tensor(list(label_token_ids), dtype=torch.long)
            self.register_buffer("label_ids", ids)  # None registers nothing to move or save

        def forward(self, input_ids, attention_mask):
            return torch.softmax(label_scores(self.model, input_ids, attention_mask, self.label_ids), dim=-1)

    return LabelHead().eval()


def export_onnx(student_folder: Path, out_folder: Path, opset: int = 17) -> Path:
    """Write ``model.onnx`` plus the tokenizer and ``distil_task.json`` into ``out_folder``."""
    import torch

    from distil.train.students import load_student_model, read_task

    task = read_task(student_folder)
    if task.get("kind") != "classify":
        raise ExportError(f"{student_folder}: only classify students export to onnx (this one is {task.get('kind')})")
    model = load_student_model(student_folder, task)
    model.config.use_cache = False
    head = _label_head_module(model, None if task["student_kind"] == "encoder" else task["label_token_ids"])
    out_folder.mkdir(parents=True, exist_ok=True)
    dummy = torch.full((2, 8), 5, dtype=torch.long)
    path = out_folder / ONNX_FILE
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            head,
            (dummy, torch.ones_like(dummy)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["probs"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "probs": {0: "batch"},
            },
            opset_version=opset,
            dynamo=False,
        )
    for f in student_folder.iterdir():  # tokenizer files and the task description travel with the graph
        if f.is_file() and (
            f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template"))
            or f.name == "distil_task.json"
        ):
            shutil.copy2(f, out_folder / f.name)
    return path


def quantize_int8(onnx_path: Path, out_path: Path | None = None) -> Path:
    """Dynamic int8 quantization of an ONNX graph (weights int8, activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = out_path or onnx_path.with_name(INT8_FILE)
    quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    return out_path


class OnnxClassifier:
    """``label_distribution(inputs) -> [n, L]`` from an exported folder, with onnxruntime on the CPU."""

    def __init__(self, folder: str | Path, model_file: str = ONNX_FILE, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.task = json.loads((self.folder / "distil_task.json").read_text())
        self.labels = list(self.task["labels"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / model_file), options, providers=["CPUExecutionProvider"])

    def label_distribution(self, inputs: Sequence[str], batch_size: int = 32) -> np.ndarray:
        from distil.train.students import encode_prompts

        out = []
        template = self.task["prompt_template"]
        for start in range(0, len(inputs), batch_size):
            texts = [template.replace("{input}", t) for t in inputs[start : start + batch_size]]
            batch = encode_prompts(self.tokenizer, texts, self.task.get("max_length", 256))
            probs = self.session.run(
                ["probs"],
                {
                    "input_ids": batch["input_ids"].numpy().astype(np.int64),
                    "attention_mask": batch["attention_mask"].numpy().astype(np.int64),
                },
            )[0]
            out.append(probs.astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))


# --- evaluation of an exported variant -----------------------------------------------------------------


def _median_ms_per_input(predict: Any, texts: Sequence[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in texts:
            predict([t])
        times.append((time.perf_counter() - start) / max(len(texts), 1) * 1000)
    return float(np.median(times))


def model_card(project: Project, run_id: str, fmt: str) -> str:
    """The exported model's README.md: what it is, which teachers it learnt from under which terms, and the
    duties it inherits from them (a required notice, a name prefix, use restrictions)."""
    from distil.licences.review import duty_lines, inherited_duties
    from distil.teachers.urls import public_source

    spec = project.spec
    lines = [
        f"# {spec.name}: student of run {run_id} ({fmt})",
        "",
        f"A {spec.task.kind} student distilled with distil from the teacher(s) below.",
        "",
        "## Teachers",
        "",
    ]
    for t in spec.teachers:
        lic = t.licence
        terms = (
            f"{lic.id or lic.name or 'unnamed licence'}, distillation permitted: {lic.distillation_permitted}"
            if lic
            else "no licence record"
        )
        lines.append(f"- {t.id} ({public_source(t.source)}): {terms}")
    lines += ["", "## Duties inherited from the teachers' licences", ""]
    duties = duty_lines(spec)
    lines += (
        [f"- {d}" for d in duties]
        if duties
        else ["distil's licence registry lists no duties for these licences; check the terms."]
    )
    prefixes = sorted({d.duty.text for d in inherited_duties(spec) if d.duty.kind == "name_prefix"})
    if prefixes:
        lines += [
            "",
            "Name this model so that it begins with "
            + " and ".join(f'"{p}"' for p in prefixes)
            + " before you distribute it.",
        ]
    return "\n".join(lines) + "\n"


def export_run(
    project: Project,
    run_id: str | None,
    fmt: str,
    quantize: str | None = None,
    actor: str = "",
    latency_sample: int = 20,
    threads: int | None = None,
) -> ExportResult:
    """Export ``run_id`` (default: the run `distil serve` would pick) to ``.distil/exports/<run>/<fmt>/``.

    A quantized classify variant is scored on the test split and the gold set (:mod:`distil.export_eval`);
    ``threads`` caps onnxruntime's threads (default: its own choice)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if quantize is not None and fmt not in QUANTIZATIONS:
        raise ExportError(
            "--quantize needs --format onnx (int8: an onnxruntime graph) or gguf (f16, q8_0, q4_0: llama.cpp types)"
        )
    if quantize is not None and quantize not in QUANTIZATIONS[fmt]:
        raise ExportError(f"--quantize {quantize!r}: --format {fmt} takes one of {', '.join(QUANTIZATIONS[fmt])}")
    run = served_run(project, run_id)
    student = run.checked_model("student")
    out = project.state_dir / "exports" / run.run_id / fmt
    if fmt == "safetensors":
        replace_dir_atomic(out, lambda folder: shutil.copytree(student, folder, dirs_exist_ok=True))
        write_text_atomic(out / MODEL_CARD, model_card(project, run.run_id, fmt))
        return ExportResult(run.run_id, fmt, out, sorted(out.iterdir()))
    if fmt == "gguf":
        return export_gguf_run(project, run, student, out, quantize, actor)

    onnx_path = export_onnx(student, out)
    card = write_text_atomic(out / MODEL_CARD, model_card(project, run.run_id, fmt))
    result = ExportResult(run.run_id, fmt, out, [onnx_path, card])
    sets = [s for s in classify_sets(run, project.spec.task.label_names) if len(s.inputs)]
    if not any(s.name == TEST for s in sets):
        if quantize is None:
            return result
        raise EvaluationError(
            "the quantized model must be evaluated, but there is no held-out test split with teacher labels",
            hint="run `distil generate` and `distil curate` first",
        )
    from distil.train.students import load_predictor

    test = sets[0]
    sets = sets if quantize else [test]  # the float graph is only checked, on the test split
    torch_probs = predict_sets(load_predictor(student).label_distribution, sets)
    onnx = OnnxClassifier(out, threads=threads)
    onnx_probs = predict_sets(onnx.label_distribution, sets)
    result.checks = {
        "n": len(test.inputs),
        "onnx_vs_pytorch": compare_variant(torch_probs[TEST], test.teacher, onnx_probs[TEST]),
    }
    if quantize is None:
        return result

    int8_path = quantize_int8(onnx_path)
    result.files.append(int8_path)
    int8 = OnnxClassifier(out, INT8_FILE, threads=threads)
    sample = test.inputs[:latency_sample]
    float_block = {
        **variant_scores(sets, onnx_probs, torch_probs),
        "size_bytes": onnx_path.stat().st_size,
        "p50_ms": _median_ms_per_input(onnx.label_distribution, sample),
    }
    int8_block = {
        **variant_scores(sets, predict_sets(int8.label_distribution, sets), torch_probs),
        "size_bytes": int8_path.stat().st_size,
        "p50_ms": _median_ms_per_input(int8.label_distribution, sample),
    }
    evaluation = {
        "run_id": run.run_id,
        "variant": "quantized",
        "quantization": "int8 dynamic (onnxruntime)",
        **_evaluated_on(sets),
        "distilled": float_block,
        "quantized": int8_block,
        "model": str(int8_path.relative_to(project.root)),
    }
    result.evaluation = record_variant(project, run, evaluation, int8_path, ".int8.onnx", actor)
    return result


def _evaluated_on(sets: list[ScoringSet]) -> dict[str, Any]:
    """The evaluation's ``split`` and ``n`` (the test split's) and, with a gold set, ``n_gold_set``."""
    sizes = {s.name: len(s.inputs) for s in sets}
    return {"split": TEST, "n": sizes[TEST], **({"n_gold_set": sizes["gold"]} if "gold" in sizes else {})}


def record_variant(
    project: Project, run: RunDir, evaluation: dict[str, Any], model_file: Path, suffix: str, actor: str
) -> dict[str, Any]:
    """Write ``evaluation`` (``distilled`` and ``quantized`` blocks) as the next version of its variant, with a copy
    of the evaluated model file beside it, and append its ``evaluation`` ledger row; returns the evaluation."""
    variant = evaluation["variant"]
    eval_path, _ = run.next_evaluation(variant)
    # the evaluated model is kept beside its evaluation: a later export rewrites the export folder,
    # and the files this evaluation recorded must stay as they were
    evaluated_model = write_with_atomic(
        eval_path.with_name(eval_path.stem + suffix), lambda tmp: shutil.copyfile(model_file, tmp)
    )
    evaluation = {**evaluation, "model": str(evaluated_model.relative_to(project.root))}
    write_json_atomic(eval_path, evaluation)
    float_block, quantized_block = evaluation["distilled"], evaluation["quantized"]
    summary = {
        "agreement": quantized_block["agreement"],
        "agreement_distilled": float_block["agreement"],
        "agreement_with_float": quantized_block.get("agreement_with_float"),
        "size_bytes": quantized_block["size_bytes"],
        "size_bytes_distilled": float_block["size_bytes"],
        "p50_ms": quantized_block.get("p50_ms"),
        "n": evaluation["n"],
    }
    gold = quantized_block.get("gold")
    if isinstance(gold, dict):
        summary.update({"agreement_gold": gold["agreement"], "n_gold_set": gold["n"]})
    project.ledger.append(
        "evaluation",
        {"run_id": run.run_id, "variant": variant, "summary": summary},
        actor=actor or project.spec.roles.driver,
        files=[eval_path, evaluated_model],
        table="evaluations",
        row={
            "run_id": run.run_id,
            "variant": variant,
            "path": str(eval_path.relative_to(project.root)),
            "summary": summary,
        },
    )
    return evaluation


# --- GGUF ----------------------------------------------------------------------------------------------------


def weights_size_bytes(folder: Path) -> int:
    """Bytes of a model folder's weight files as stored (safetensors / PyTorch bins), tokenizer excluded."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.suffix in (".safetensors", ".bin"))


def _token_agreement_block(predictor: Any, texts: list[str], teacher: list[str]) -> dict[str, Any]:
    """A generate student's teacher-forced token agreement with the teacher's answers on the test split."""
    from distil.train.token_agreement import teacher_forced_agreement

    shares = teacher_forced_agreement(
        predictor.model, predictor.tokenizer, texts, teacher, predictor.task.get("max_length", 256)
    )
    return {"agreement": float(np.mean(shares)) if len(shares) else float("nan"), "measure": "token agreement"}


def export_gguf_run(
    project: Project, run: RunDir, student: Path, out: Path, quantize: str | None, actor: str
) -> ExportResult:
    """``model.<type>.gguf`` (float32 without ``quantize``) with ``distil_task.json`` and the model card in ``out``.
    A float32 file is checked against PyTorch on the test split; a quantized one is evaluated against the teacher
    there (and, for a classify student, on the gold set) and recorded as variant ``gguf-<type>``."""
    from distil.export_gguf import write_gguf
    from distil.train.students import load_predictor, read_task

    task = read_task(student)
    gguf_type = quantize or "f32"
    written = write_gguf(student, out / f"model.{gguf_type}.gguf", gguf_type, name=f"{project.spec.name}-{run.run_id}")
    write_with_atomic(out / "distil_task.json", lambda tmp: shutil.copyfile(student / "distil_task.json", tmp))
    card = write_text_atomic(out / MODEL_CARD, model_card(project, run.run_id, f"gguf {gguf_type}"))
    result = ExportResult(run.run_id, "gguf", out, [written.path, card])
    classify = task["kind"] == "classify"
    if classify:
        sets = [s for s in classify_sets(run, project.spec.task.label_names) if len(s.inputs)]
        n_test = len(sets[0].inputs) if sets and sets[0].name == TEST else 0
    else:
        records = [r for r in run.dataset().records(TEST) if r.teacher_text]
        texts, teacher = [r.input for r in records], [str(r.teacher_text) for r in records]
        n_test = len(records)
    if not n_test and quantize is None:
        return result
    if not n_test:
        raise EvaluationError(
            f"the {gguf_type} GGUF model must be evaluated, but there is no held-out test split with the teacher's "
            "answers",
            hint="run `distil generate` and `distil curate` first",
        )
    float_student = load_predictor(student)
    exported = load_predictor(out, gguf_file=written.path.name)
    if classify:
        sets = sets if quantize else sets[:1]  # the float32 file is only checked, on the test split
        reference = predict_sets(float_student.label_distribution, sets)
        exported_block = variant_scores(sets, predict_sets(exported.label_distribution, sets), reference)
        evaluated_on = _evaluated_on(sets)
    else:
        exported_block = _token_agreement_block(exported, texts, teacher)
        evaluated_on = {"split": TEST, "n": n_test}
    exported_block["size_bytes"] = written.size_bytes
    if quantize is None:
        result.checks = {"n": n_test, "gguf_vs_pytorch": exported_block}
        return result
    float_block = {
        **(
            variant_scores(sets, reference, reference)
            if classify
            else _token_agreement_block(float_student, texts, teacher)
        ),
        "size_bytes": weights_size_bytes(student),
    }
    evaluation = {
        "run_id": run.run_id,
        "variant": f"gguf-{gguf_type}",
        "quantization": f"GGUF {gguf_type} (llama.cpp block types; read back by transformers' GGUF loader)",
        **evaluated_on,
        "distilled": float_block,
        "quantized": exported_block,
    }
    result.evaluation = record_variant(project, run, evaluation, written.path, f".{gguf_type}.gguf", actor)
    return result
