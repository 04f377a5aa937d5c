"""A hand loop over distil.train.losses (not `distil train`) against TRL's GKDTrainer (λ=0, β=0).

This times distil's loss functions in a few lines of PyTorch, not the command a user runs; the race of `distil
train` itself against TRL is benchmarks/train_race.py. Same random-init Llama teacher and student, same data,
batch and sequence length. Each contender runs in its own process so peak memory is its own (CPU: max RSS;
CUDA: max allocated). Median step time after warm-up. `--device cuda` uses the anchor configurations of
../shared/anchors (teacher 1.10B, student 125M at vocabulary 32k; set --vocab 151936 for the large-vocabulary case).

    python benchmarks/train_throughput.py                # tiny CPU configs, writes docs/benchmarks.md
    python benchmarks/train_throughput.py --device cuda --vocab 32000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from _llama import SHAPES, llama_config  # benchmarks/ is on the path when a script runs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ["WANDB_DISABLED"] = "true"

SIZES = {  # the models and sequence shape of _llama.SHAPES, and how many steps this benchmark times
    "cpu": {**SHAPES["cpu"], "steps": 10, "warm": 3},
    "cuda": {**SHAPES["cuda"], "steps": 25, "warm": 5},
}


def configs(device: str, vocab: int):
    s = SIZES[device]
    return tuple(llama_config(s[role], vocab, 1, 2, attn_implementation="sdpa") for role in ("teacher", "student"))


def models(device: str, vocab: int):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    tcfg, scfg = configs(device, vocab)
    with torch.device(device):
        teacher = LlamaForCausalLM(tcfg).eval()
        student = LlamaForCausalLM(scfg)
    if device == "cuda":
        teacher = teacher.to(torch.bfloat16)
    return teacher, student


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_distil(device: str, vocab: int) -> dict:
    """distil's generate-task step: hidden states, then the fused chunked head + forward KL."""
    import torch

    from distil.train import losses as L

    s = SIZES[device]
    teacher, student = models(device, vocab)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, vocab, (s["batch"], s["seq"]), generator=g).to(device)
    autocast = torch.autocast("cuda", torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(s["steps"]):
        sync(device)
        start = time.perf_counter()
        with torch.no_grad(), autocast:
            th = teacher.model(x).last_hidden_state.flatten(0, 1)
        with autocast:
            sh = student.model(x).last_hidden_state.flatten(0, 1)
        t_head = teacher.lm_head.weight
        chunk = L.summed_divergence_chunk(lambda a, b, th=th, t_head=t_head: th[a:b] @ t_head.T, "forward_kl")
        loss = L.chunked_head_loss(sh, student.lm_head.weight, chunk, chunk_size=1024) / th.shape[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    return {"tokens_per_step": s["batch"] * s["seq"], "times": times}


def run_distil_cached(device: str, vocab: int, epochs: int, steps_per_epoch: int) -> dict:
    """distil with the offline cache: one teacher pass writes top-k (k=32, fp16 + int32) for every token,
    then ``epochs`` student-only epochs read it (sparse top-k KD in the fused chunked head). Total time."""
    import torch

    from distil.train import losses as L

    s = SIZES[device]
    teacher, student = models(device, vocab)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(5, vocab, (s["batch"], s["seq"]), generator=g).to(device) for _ in range(steps_per_epoch)]
    autocast = torch.autocast("cuda", torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    cache = []
    with torch.no_grad(), autocast:
        for x in data:
            th = teacher.model(x).last_hidden_state.flatten(0, 1)
            ids, lps = [], []
            for a in range(0, th.shape[0], 1024):
                top = torch.log_softmax((th[a : a + 1024] @ teacher.lm_head.weight.T).float(), -1).topk(32, dim=-1)
                ids.append(top.indices.to(torch.int32))
                lps.append(top.values.to(torch.float16))
            cache.append((torch.cat(ids).cpu(), torch.cat(lps).cpu()))
    del teacher
    if device == "cuda":
        torch.cuda.empty_cache()
    sync(device)
    built = time.perf_counter() - start
    for _ in range(epochs):
        for x, (ids, lps) in zip(data, cache, strict=True):
            with autocast:
                sh = student.model(x).last_hidden_state.flatten(0, 1)
            chunk = L.summed_topk_chunk(ids.to(device).long(), lps.to(device).float())
            loss = L.chunked_head_loss(sh, student.lm_head.weight, chunk, chunk_size=1024) / sh.shape[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    sync(device)
    total = time.perf_counter() - start
    return {
        "total_s": total,
        "cache_s": built,
        "cache_bytes": sum(int(i.nbytes + v.nbytes) for i, v in cache),
        "tokens": s["batch"] * s["seq"] * steps_per_epoch,
    }


def run_trl(device: str, vocab: int, steps: int | None = None) -> dict:
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    s = SIZES[device]
    random.seed(0)
    words = [f"w{i}" for i in range(vocab - 10)]
    tk = Tokenizer(tok_models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.train_from_iterator(
        [" ".join(words)] + ["<|user|> <|assistant|>"],
        trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>"]),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <eos> ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    teacher, student = models(device, vocab)
    half = s["seq"] // 2
    text = lambda n: " ".join(random.choice(words) for _ in range(n))  # noqa: E731
    steps = steps or s["steps"]
    rows = [
        {"messages": [{"role": "user", "content": text(half - 8)}, {"role": "assistant", "content": text(half + 8)}]}
        for _ in range(s["batch"] * (steps + 2))
    ]
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync(device)
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync(device)
            times.append(time.perf_counter() - self.t)

    args = GKDConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=s["batch"],
        max_length=s["seq"],
        max_steps=steps,
        lmbda=0.0,
        beta=0.0,
        temperature=1.0,
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        learning_rate=1e-4,
        dataloader_num_workers=0,
        seq_kd=False,
        disable_dropout=True,
    )
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[Timer()],
    )
    batch = next(iter(trainer.get_train_dataloader()))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    sync(device)
    return {
        "tokens_per_step": int(batch["attention_mask"].sum()),
        "times": times,
        "total_s": time.perf_counter() - start,
    }


CACHE_EPOCHS, CACHE_STEPS_PER_EPOCH = 3, 8
H100_BF16_PEAK = 989e12  # dense bf16 tensor-core FLOP/s of an H100 SXM


def child(which: str, device: str, vocab: int) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if which in ("distil-cache", "trl-epochs"):
        if which == "distil-cache":
            result = run_distil_cached(device, vocab, CACHE_EPOCHS, CACHE_STEPS_PER_EPOCH)
        else:
            result = {
                k: v for k, v in run_trl(device, vocab, CACHE_EPOCHS * CACHE_STEPS_PER_EPOCH).items() if k != "times"
            }
        peak = (
            torch.cuda.max_memory_allocated()
            if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        print("RESULT " + json.dumps({**result, "peak_bytes": peak}))
        return
    result = run_distil(device, vocab) if which == "distil" else run_trl(device, vocab)
    warm = SIZES[device]["warm"]
    kept = sorted(result["times"][warm:])
    median = kept[len(kept) // 2]
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    print(
        "RESULT "
        + json.dumps(
            {
                "tokens_per_s": result["tokens_per_step"] / median,
                "step_s": median,
                "peak_bytes": peak,
                "tokens_per_step": result["tokens_per_step"],
                "steps_timed": len(kept),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--child", choices=["distil", "trl", "distil-cache", "trl-epochs"], default=None)
    parser.add_argument(
        "--mode",
        choices=["step", "cache"],
        default="step",
        help="step: median step time and peak memory; cache: total time of 3 epochs, distil's cache build included.",
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()
    vocab = args.vocab or SIZES[args.device]["vocab"]
    if args.child:
        child(args.child, args.device, vocab)
        return
    if args.mode == "cache":
        cache_main(args, vocab)
        return
    results = run_children(args.device, vocab, ("distil", "trl"))
    if args.no_write or any("error" in r for r in results.values()):
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from _report import markdown_table, write_section

    s = SIZES[args.device]
    tcfg, scfg = configs(args.device, vocab)
    rows = [
        [name, f"{r['tokens_per_s']:,.0f}", f"{r['step_s'] * 1000:,.1f}", f"{r['peak_bytes'] / 2**20:,.0f}"]
        for name, r in results.items()
    ]
    if (
        args.device == "cuda"
    ):  # model FLOPs utilisation: 6·N per student token (forward + backward), 2·N per teacher token
        import torch
        from transformers import LlamaForCausalLM

        with torch.device("meta"):
            n_t, n_s = (sum(p.numel() for p in LlamaForCausalLM(c).parameters()) for c in (tcfg, scfg))
        for row, r in zip(rows, results.values(), strict=True):
            row.append(f"{(6 * n_s + 2 * n_t) * r['tokens_per_s'] / H100_BF16_PEAK:.1%}")
    ratio = results["distil"]["tokens_per_s"] / results["trl"]["tokens_per_s"]
    mem = results["distil"]["peak_bytes"] / results["trl"]["peak_bytes"]
    peak_note = (
        "peak = max allocated GPU memory"
        if args.device == "cuda"
        else "peak = max resident set size of the process, models and Python included"
    )
    body = (
        f"Random-init Llamas, vocabulary {vocab:,}: teacher hidden {tcfg.hidden_size} × {tcfg.num_hidden_layers} "
        f"layers, student hidden {scfg.hidden_size} × {scfg.num_hidden_layers} layers; batch {s['batch']}, sequence "
        f"{s['seq']}; forward KL (TRL: λ=0, β=0). Median of {s['steps'] - s['warm']} steps after {s['warm']} warm-up "
        "steps; each contender in its own process "
        f"({peak_note}).\n\n"
        + markdown_table(
            ["trainer", "tokens/s", "step ms", "peak MiB"]
            + (["MFU (of 989 TFLOP/s bf16)"] if args.device == "cuda" else []),
            rows,
        )
        + f"\n\nhand loop / TRL: {ratio:.2f}× the tokens/s at {mem:.2f}× the peak memory. distil runs the vocabulary "
        "projection and the loss in 1024-position chunks whose backward runs inside the same chunk, so [batch, seq, "
        "vocab] is never built; TRL materialises full teacher and student logits."
    )
    write_section(
        f"train_throughput_{args.device}",
        f"Training step: a hand loop over distil.train.losses (not `distil train`) vs TRL GKDTrainer ({args.device})",
        body,
    )


def run_children(device: str, vocab: int, names: tuple[str, ...]) -> dict[str, dict]:
    """Each contender in its own process (so its peak memory is its own); its RESULT line, or the error."""
    results = {}
    for which in names:
        done = subprocess.run(
            [sys.executable, __file__, "--device", device, "--vocab", str(vocab), "--child", which],
            capture_output=True,
            text=True,
        )
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        results[which] = json.loads(line[-1][7:]) if line else {"error": done.stderr[-600:]}
        print(which, results[which], flush=True)
    return results


def cache_main(args, vocab: int) -> None:  # noqa: ANN001
    results = run_children(args.device, vocab, ("distil-cache", "trl-epochs"))
    if args.no_write or any("error" in r for r in results.values()):
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from _report import markdown_table, write_section

    s = SIZES[args.device]
    ours, theirs = results["distil-cache"], results["trl-epochs"]
    rows = [
        [
            "distil, offline top-32 cache",
            f"{ours['total_s']:,.1f}",
            f"{ours['cache_s']:,.1f}",
            f"{ours['peak_bytes'] / 2**20:,.0f}",
        ],
        [
            "TRL GKDTrainer (teacher forward every step)",
            f"{theirs['total_s']:,.1f}",
            "-",
            f"{theirs['peak_bytes'] / 2**20:,.0f}",
        ],
    ]
    body = (
        f"The configuration of the step benchmark above (vocabulary {vocab:,}, batch {s['batch']}, sequence "
        f"{s['seq']}), {CACHE_STEPS_PER_EPOCH} batches per epoch, {CACHE_EPOCHS} epochs. distil runs the teacher "
        f"once over the data and keeps its top-32 log-probabilities ({ours['cache_bytes']:,} bytes for "
        f"{ours['tokens']:,} tokens, {ours['cache_bytes'] / ours['tokens']:.0f} bytes per token), then trains the "
        "student with the teacher unloaded; TRL's GKDTrainer runs the teacher on every step of every epoch. One run "
        "each, each in its own process.\n\n"
        + markdown_table(["trainer", "total s (3 epochs)", "of which cache build s", "peak MiB"], rows)
        + f"\n\ndistil / TRL total time: {ours['total_s'] / theirs['total_s']:.2f}×. Load average at the end (the "
        f"machine is shared): {os.getloadavg()[0]:.1f}."
    )
    write_section(
        f"train_cache_{args.device}",
        f"Three epochs, a hand loop with an offline top-k cache (not `distil train`) vs TRL ({args.device})",
        body,
    )


if __name__ == "__main__":
    main()
