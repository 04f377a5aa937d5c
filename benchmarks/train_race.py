"""The training race: `distil train` itself against TRL's GKDTrainer (λ=0, β=0: forward KL on fixed data).

Both contenders get the same random-init Llama teacher and student (saved once, loaded by each), the same
curated records, batch, sequence length, epochs and learning rate:

- distil: a real project folder (distil.yaml, a curated dataset in its ledger) trained by
  `python -m distil train --no-baseline` in a fresh process, exactly as a user runs it: its data loading,
  its offline top-k teacher cache (a generate task's teacher signal), validation once per epoch, its
  checkpoint, model folder, metrics and ledger row;
- TRL: GKDTrainer on the same records as chat messages, its teacher run on every step, the model saved at the
  end (`trainer.save_model`), as its documentation shows.

Each run is its own process, started fresh (empty caches), the two alternated, the median of --repeats taken.
Tokens are the non-padding tokens each trainer's student read (its own count); tokens/s divides them by the
process's wall time, set-up included (imports, loading, distil's teacher cache). Peak memory on CPU is the
process's maximum resident set (``os.wait4``'s rusage of that child).

    python benchmarks/train_race.py                    # tiny CPU configuration, writes docs/benchmarks.md
    python benchmarks/train_race.py --device cuda --vocab 32000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _llama import SHAPES, llama_config  # benchmarks/ is on the path when a script runs

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = ["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>", "Answer:"]  # "Answer:" ends distil's student prompt
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <eos> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)
SIZES = {  # the models and sequence shape of _llama.SHAPES, and this race's data and epochs
    "cpu": {**SHAPES["cpu"], "train": 32, "validation": 8, "epochs": 3, "precision": "fp32"},  # 8 steps an epoch
    "cuda": {**SHAPES["cuda"], "train": 256, "validation": 16, "epochs": 3, "precision": "bf16"},
}
LR = 1e-4
TOPK = 32


# --- the shared set-up: tokenizer, teacher, student, records, project --------------------------------------------


def tokenizer(vocab: int):
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab - len(SPECIAL))]
    tk = Tokenizer(tok_models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=SPECIAL, vocab_size=vocab))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE
    return tok, words


def llama(dims: tuple[int, int, int, int, int], vocab: int, tok):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(llama_config(dims, vocab, tok.pad_token_id, tok.eos_token_id))


def prepare(work: Path, device: str, vocab: int) -> dict:
    """Teacher and student folders, the records, and a distil project holding them as its curated dataset."""
    import torch

    from distil.data.curate import curated_folder, write_curated
    from distil.data.records import Record
    from distil.spec.io import load_project

    s = SIZES[device]
    tok, words = tokenizer(vocab)
    torch.manual_seed(0)
    for name in ("teacher", "student"):
        model = llama(s[name], vocab, tok)
        model.save_pretrained(work / name)
        tok.save_pretrained(work / name)
    rng = random.Random(0)
    answer_words = s["seq"] // 2 - 1  # distil keeps max_length // 2 answer tokens, EOS included
    prompt_words = s["seq"] // 2 - 8  # both trainers' templates then fit in the sequence length

    def record() -> Record:
        text = " ".join(rng.choice(words) for _ in range(prompt_words))
        answer = " ".join(rng.choice(words) for _ in range(answer_words))
        return Record(input=text, source="synthetic", teacher_text=answer)

    splits = {
        "train": [record() for _ in range(s["train"])],
        "validation": [record() for _ in range(s["validation"])],
    }
    splits["test"] = [dataclasses.replace(r) for r in splits["validation"]]
    project_dir = work / "project"
    spec = {
        "name": "race",
        "task": {"kind": "generate", "instruction": "{input}", "max_new_tokens": answer_words + 1},
        "play": {"kind": "cost"},
        "roles": {"sponsor": "sponsor", "driver": "driver", "validator": "validator"},
        "teachers": [{"id": "teacher", "source": f"hf:{work / 'teacher'}"}],
        "student": {"path": str(work / "student")},
        "train": {
            "epochs": s["epochs"],
            "batch_size": s["batch"],
            "max_length": s["seq"],
            "patience": 0,
            "precision": s["precision"],
            "optimizer": {"lr": LR, "warmup_ratio": 0.0},
            "distillation": {"loss": "forward_kl", "alpha": 0.0, "temperature": 1.0, "topk_cache_k": TOPK},
        },
    }
    import yaml

    project_dir.mkdir(parents=True)
    (project_dir / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    project = load_project(project_dir / "distil.yaml")
    dataset_hash = write_curated(project, splits)
    folder = curated_folder(project, dataset_hash)
    return {"train_parquet": str(folder / "train.parquet"), "device": device, "vocab": vocab}


# --- the contenders, each in a process of its own ------------------------------------------------------------------


def fresh_env(home: Path, threads: int) -> dict[str, str]:
    """Nothing carried between runs: a fresh home and caches; the same thread count for both."""
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(home / ".cache" / "huggingface"),
        "DISTIL_CACHE": str(home / ".cache" / "distil"),
        "HF_HUB_OFFLINE": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "WANDB_DISABLED": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def timed_process(command: list[str], env: dict[str, str], log: Path) -> tuple[float, int, int]:
    """(wall seconds, peak resident bytes, exit status) of ``command`` in a process of its own."""
    with log.open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, child.returncode


# on a GPU the peak is torch's max allocated memory: the CLI runs as `python -m distil` would, and says it at exit
CUDA_PEAK_WRAPPER = (
    "import atexit, runpy, sys, torch\n"
    "atexit.register(lambda: print('CUDA_PEAK', torch.cuda.max_memory_allocated(), flush=True))\n"
    "sys.argv = ['distil', *sys.argv[1:]]\n"
    "runpy.run_module('distil', run_name='__main__', alter_sys=True)\n"
)


def cuda_peak(log: Path) -> int | None:
    found = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("CUDA_PEAK ")]
    return int(found[-1]) if found else None


def run_distil(work: Path, run: int, threads: int, profile: bool = False) -> dict:
    """`distil train` on a fresh copy of the project (no teacher cache, no runs), in a fresh process."""
    project = work / f"distil-{run}"
    shutil.copytree(work / "project", project)
    device = json.loads((work / "race.json").read_text())["device"]
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", str(work / f"distil-{run}.prof")]
    command += ["-c", CUDA_PEAK_WRAPPER] if device == "cuda" else ["-m", "distil"]
    command += ["train", "--spec", str(project / "distil.yaml"), "--no-baseline"]
    wall, peak, status = timed_process(
        command, fresh_env(work / f"home-distil-{run}", threads), work / f"distil-{run}.log"
    )
    if status != 0:
        return {"error": (work / f"distil-{run}.log").read_text()[-2000:]}
    (metrics_file,) = (project / ".distil" / "runs").glob("*/metrics.json")
    student = json.loads(metrics_file.read_text())["student"]
    return {
        "wall_s": wall,
        "peak_bytes": cuda_peak(work / f"distil-{run}.log") if device == "cuda" else peak,
        "tokens": student["tokens"],
        "loop_tokens_per_s": student["tokens_per_s"],
        "steps": student["steps"],
    }


def run_trl(work: Path, run: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", "trl", "--workdir", str(work), "--run", str(run)]
    log = work / f"trl-{run}.log"
    wall, peak, status = timed_process(command, fresh_env(work / f"home-trl-{run}", threads), log)
    lines = [x for x in log.read_text().splitlines() if x.startswith("RESULT ")]
    if status != 0 or not lines:
        return {"error": log.read_text()[-2000:]}
    return {"wall_s": wall, "peak_bytes": peak, **json.loads(lines[-1][7:])}  # on a GPU the child's own peak


def trl_child(work: Path, run: int) -> None:
    """TRL's GKDTrainer as its documentation shows it: chat messages, λ=0, β=0, the model saved at the end."""
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    setup = json.loads((work / "race.json").read_text())
    s = SIZES[setup["device"]]
    rows = [
        {"messages": [{"role": "user", "content": r["input"]}, {"role": "assistant", "content": r["teacher_text"]}]}
        for r in pq.read_table(setup["train_parquet"], columns=["input", "teacher_text"]).to_pylist()
    ]
    tok = AutoTokenizer.from_pretrained(str(work / "teacher"))
    teacher = AutoModelForCausalLM.from_pretrained(str(work / "teacher"), dtype=torch.float32)
    student = AutoModelForCausalLM.from_pretrained(str(work / "student"), dtype=torch.float32)
    if setup["device"] == "cuda":
        teacher = teacher.to(torch.bfloat16)
    args = GKDConfig(
        output_dir=str(work / f"trl-out-{run}"),
        per_device_train_batch_size=s["batch"],
        num_train_epochs=s["epochs"],
        max_length=s["seq"],
        learning_rate=LR,
        lmbda=0.0,
        beta=0.0,
        temperature=1.0,
        seq_kd=False,
        bf16=s["precision"] == "bf16",
        use_cpu=setup["device"] == "cpu",
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_dropout=True,
    )
    trainer = GKDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    tokens_per_epoch = sum(int(b["attention_mask"].sum()) for b in trainer.get_train_dataloader())
    output = trainer.train()
    trainer.save_model()
    runtime = output.metrics["train_runtime"]
    print(
        "RESULT "
        + json.dumps(
            {
                "tokens": tokens_per_epoch * s["epochs"],
                "loop_tokens_per_s": tokens_per_epoch * s["epochs"] / runtime,
                "steps": output.global_step,
                **({"peak_bytes": torch.cuda.max_memory_allocated()} if setup["device"] == "cuda" else {}),
            }
        )
    )


# --- the race and its section ---------------------------------------------------------------------------------------


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def race(device: str, vocab: int, repeats: int, threads: int, keep: Path | None) -> tuple[dict[str, list[dict]], list]:
    work = Path(tempfile.mkdtemp(prefix="distil-race-", dir=keep))
    setup = prepare(work, device, vocab)
    (work / "race.json").write_text(json.dumps(setup))
    results: dict[str, list[dict]] = {"distil": [], "trl": []}
    loads = []
    for run in range(repeats):
        order = ("distil", "trl") if run % 2 == 0 else ("trl", "distil")
        for who in order:
            loads.append(os.getloadavg()[0])
            result = run_distil(work, run, threads) if who == "distil" else run_trl(work, run, threads)
            print(who, run, {k: v for k, v in result.items() if k != "error"} or result["error"], flush=True)
            if "error" in result:
                raise SystemExit(f"{who} failed:\n{result['error']}")
            results[who].append(result)
    loads.append(os.getloadavg()[0])
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return results, loads


def section_body(device: str, vocab: int, repeats: int, threads: int, results: dict[str, list[dict]], loads) -> str:
    from _report import markdown_table

    s = SIZES[device]
    medians = {
        who: {k: median_of(runs, k) for k in ("wall_s", "peak_bytes", "tokens", "loop_tokens_per_s")}
        for who, runs in results.items()
    }
    for m in medians.values():
        m["tokens_per_s"] = m["tokens"] / m["wall_s"]
    rows = [
        [
            label,
            f"{m['tokens']:,.0f}",
            f"{m['wall_s']:,.1f}",
            f"{m['tokens_per_s']:,.0f}",
            f"{m['loop_tokens_per_s']:,.0f}",
            f"{m['peak_bytes'] / 2**20:,.0f}",
            ", ".join(f"{r['wall_s']:.1f}" for r in results[who]),
        ]
        for who, label, m in (
            ("distil", "`distil train --no-baseline` (top-32 teacher cache built in the run)", medians["distil"]),
            ("trl", "TRL 1.16 GKDTrainer (λ=0, β=0; teacher forward every step)", medians["trl"]),
        )
    ]
    ours, theirs = medians["distil"], medians["trl"]
    speed, memory = ours["tokens_per_s"] / theirs["tokens_per_s"], ours["peak_bytes"] / theirs["peak_bytes"]
    target = (1.5, 1.0) if device == "cpu" else (2.0, 0.5)
    met = "met" if speed >= target[0] and memory <= target[1] else "NOT met"
    (t_hidden, t_layers, *_), (s_hidden, s_layers, *_) = s["teacher"], s["student"]
    return (
        f"Random-init Llamas, vocabulary {vocab:,}: teacher hidden {t_hidden} × {t_layers} layers, student hidden "
        f"{s_hidden} × {s_layers} layers (the same saved folders for both); {s['train']} training records of "
        f"{s['seq'] // 2 - 8} + {s['seq'] // 2 - 1} words (one token each), batch {s['batch']}, sequence {s['seq']}, "
        f"{s['epochs']} epochs, AdamW lr {LR:g}, {s['precision']}, {threads} threads. distil: `python -m distil "
        "train --no-baseline` on a real project (curated dataset in its ledger), pure top-k KD (α = 0, forward KL "
        f"against the teacher's top-{TOPK}, cache built in the run from the teacher), validation on "
        f"{s['validation']} records once per epoch, checkpoint, model folder, metrics and ledger row as a user gets "
        "them. TRL: GKDTrainer on the same records as chat messages (λ = 0, β = 0: forward KL over the full "
        "vocabulary, the teacher run on every step), `trainer.save_model()` at the end. Each run a fresh process "
        f"with empty caches, the two alternated, median of {repeats}. tokens = non-padding tokens each student read "
        "(its own template: distil's bare prompt + answer, TRL's chat template); tokens/s = tokens / wall time of the "
        "process, set-up included; in-loop tokens/s = tokens / the trainer's own training time; peak = "
        + (
            "torch.cuda.max_memory_allocated() of the process."
            if device == "cuda"
            else "maximum resident set of the process."
        )
        + " Load average (1 min) at each start and at the end: "
        f"{', '.join(f'{x:.1f}' for x in loads)}.\n\n"
        + markdown_table(
            ["trainer", "tokens", "wall s", "tokens/s (wall)", "tokens/s (in loop)", "peak MiB", "wall s per run"],
            rows,
        )
        + f"\n\ndistil / TRL: **{speed:.2f}×** the tokens/s (wall time, set-up included) at **{memory:.2f}×** the peak "
        f"memory; in the loop alone {ours['loop_tokens_per_s'] / theirs['loop_tokens_per_s']:.2f}×. Target on "
        f"{device} ≥ {target[0]}× at ≤ {target[1]}×: {met}. The losses differ in what the teacher gives: distil's "
        f"generate path trains on the teacher's top-{TOPK} log-probabilities per answer token, kept from one teacher "
        "pass, TRL on its full distribution recomputed every step."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each contender (alternated); the median.")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--profile", action="store_true", help="One distil run under cProfile; print where it went.")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the working folder under this folder.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    parser.add_argument("--child", choices=["trl"], default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--run", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        trl_child(args.workdir, args.run)
        return
    vocab = args.vocab or SIZES[args.device]["vocab"]
    if args.profile:
        profile_distil(args.device, vocab, args.threads)
        return
    results, loads = race(args.device, vocab, args.repeats, args.threads, args.keep)
    sys.path.insert(0, str(Path(__file__).parent))
    body = section_body(args.device, vocab, args.repeats, args.threads, results, loads)
    print(body)
    if not args.no_write:
        from _report import write_section

        write_section(
            f"train_race_{args.device}", f"The training race: `distil train` vs TRL GKDTrainer ({args.device})", body
        )


def profile_distil(device: str, vocab: int, threads: int) -> None:
    """One `distil train` under cProfile: the functions with the most cumulative time."""
    import pstats

    work = Path(tempfile.mkdtemp(prefix="distil-race-profile-"))
    (work / "race.json").write_text(json.dumps(prepare(work, device, vocab)))
    result = run_distil(work, 0, threads, profile=True)
    print(result)
    pstats.Stats(str(work / "distil-0.prof")).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
