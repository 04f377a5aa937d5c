"""A divergence study on generated 2-digit addition with step-by-step rationales (CPU-sized).

The script writes the task: "45+12=R" followed by one rationale step per digit, right to left
("5+2+0=07," …: digits, carry in, two-digit sum), then "|057". A tiny Llama teacher is trained from
scratch on it (``cross_entropy``), then writes its own rationale and answer for every training
problem by greedy decoding. Students (smaller Llamas, fresh weights) learn from that teacher text:

- divergence arms: token-level ``distillation_loss`` against the teacher's logits on its own text
  (off-policy / supervised KD), kind = forward_kl, reverse_kl, jsd (β = 0.5), skew_forward_kl
  (α = 0.1), plus plain cross-entropy on the teacher's text (sequence-level KD) for reference;
- on-policy arms (GKD, Agarwal et al. 2024): on each step, with probability λ
  (``distil.train.onpolicy.on_policy_step_uses_student``) the student samples its own completions for
  the step's prompts (``sample_completions``, temperature 1), the teacher scores them and the
  divergence is taken on the student's tokens; otherwise on the teacher's text. λ ∈ {0, 0.5, 1};
- data arms (Distilling step-by-step, Hsieh et al. 2023): label-only ("…=L" → answer, ``cross_entropy``)
  vs rationale multitask ("…=L" → answer plus "…=R" → rationale, ``rationale_multitask_loss``) on
  12.5 %, 50 % and 100 % of the problems; both answer from "…=L" at test time, without a rationale.

Score: exact-match answers on held-out problems by greedy decoding.

    python benchmarks/divergence_study.py              # CPU size, writes docs/benchmarks.md
    python benchmarks/divergence_study.py --size tiny --no-write
"""

from __future__ import annotations

import copy
import os
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from distil.train import losses as L  # noqa: E402
from distil.train.loop import lr_lambda  # noqa: E402
from distil.train.onpolicy import on_policy_step_uses_student, sample_completions, step_rng  # noqa: E402

DIGITS = 2
VOCAB = list("0123456789+=,|LR") + ["<s>"]
TOK = {c: i for i, c in enumerate(VOCAB)}
BOS = TOK["<s>"]
PROMPT_LEN = 1 + 2 * DIGITS + 2 + 1  # <s> a + b = R|L
STEP = "d+d+c=ss,"
RATIONALE_LEN = DIGITS * len(STEP) - 1  # the last step has no comma
ANSWER_LEN = DIGITS + 1
COMPLETION_LEN = RATIONALE_LEN + 1 + ANSWER_LEN  # rationale, "|", answer

SIZES = {
    # Llama shapes are (hidden, layers, intermediate, heads)
    "cpu": dict(
        train=4000,
        test=400,
        teacher=(64, 2, 128, 4),
        teacher_steps=500,
        student=(48, 2, 96, 4),
        student_steps=400,
        batch=64,
        lr=5e-3,
        seeds=2,
        fractions=(0.125, 0.5, 1.0),
        lambdas=(0.0, 0.5, 1.0),
        on_policy_kind="jsd",
        on_policy_steps=200,
    ),
    "tiny": dict(
        train=64,
        test=32,
        teacher=(16, 1, 32, 2),
        teacher_steps=3,
        student=(16, 1, 32, 2),
        student_steps=2,
        batch=8,
        lr=3e-3,
        seeds=1,
        fractions=(0.5, 1.0),
        lambdas=(0.0, 1.0),
        on_policy_kind="jsd",
        on_policy_steps=1,
    ),
}
KINDS = {"forward_kl": {}, "reverse_kl": {}, "jsd": {"beta": 0.5}, "skew_forward_kl": {"alpha": 0.1}}


# --- the task ----------------------------------------------------------------------------------------------


def problem(rng: random.Random) -> tuple[int, int]:
    return rng.randrange(10**DIGITS), rng.randrange(10**DIGITS)


def prompt(a: int, b: int, task: str) -> str:
    return f"{a:0{DIGITS}d}+{b:0{DIGITS}d}={task}"


def rationale(a: int, b: int) -> str:
    steps, carry = [], 0
    for i in range(DIGITS):
        da, db = (a // 10**i) % 10, (b // 10**i) % 10
        s = da + db + carry
        steps.append(f"{da}+{db}+{carry}={s:02d}")
        carry = s // 10
    return ",".join(steps)


def answer(a: int, b: int) -> str:
    return f"{a + b:0{ANSWER_LEN}d}"


def encode(texts: list[str]) -> torch.Tensor:
    """Equal-length strings -> [N, 1 + len] ids with a leading <s>."""
    return torch.tensor([[BOS] + [TOK[c] for c in t] for t in texts], dtype=torch.long)


def decode(ids: torch.Tensor) -> list[str]:
    return ["".join(VOCAB[i] for i in row.tolist() if i != BOS) for row in ids]


def problems(n: int, seed: int, exclude: set | None = None) -> list[tuple[int, int]]:
    rng, out, seen = random.Random(seed), [], set(exclude or ())
    while len(out) < n:
        p = problem(rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


# --- models ------------------------------------------------------------------------------------------------


def llama(shape: tuple[int, int, int, int], seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, inter, heads = shape
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=64,
        bos_token_id=BOS,
        eos_token_id=BOS,
        pad_token_id=BOS,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def shifted_logits(model, ids: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Logits predicting ids[:, 1:]. [B, S] -> [B, S-1, V]."""
    return model(input_ids=ids).logits[:, :-1]


def completion_mask(ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """True where a position predicts a completion token (after the prompt). [B, S] -> [B, S-1]."""
    mask = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    mask[:, prompt_len - 1 :] = True
    return mask


def targets(ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """ids[:, 1:] with -100 on prompt positions. [B, S] -> [B, S-1]."""
    t = ids[:, 1:].clone()
    t[:, : prompt_len - 1] = -100
    return t


@torch.no_grad()
def greedy(model, prompts: torch.Tensor, new_tokens: int, batch: int = 256) -> torch.Tensor:  # noqa: ANN001
    """Greedy continuation of equal-length prompts. [N, P] -> [N, P + new_tokens]."""
    model.eval()
    out = []
    for start in range(0, len(prompts), batch):
        ids = prompts[start : start + batch]
        for _ in range(new_tokens):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        out.append(ids)
    return torch.cat(out)


def fit(model, steps: int, batch: int, seed: int, loss_fn, n: int, lr: float = 3e-3):  # noqa: ANN001
    """AdamW with warm-up and cosine decay (distil's trainer schedule); loss_fn(rows, step) -> scalar."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, 0.05))
    model.train()
    for step in range(steps):
        rows = torch.randint(0, n, (min(batch, n),), generator=g)
        loss = loss_fn(rows, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


def exact_match(model, test: list[tuple[int, int]], task: str) -> float:  # noqa: ANN001
    """Share of test problems whose greedy answer (after '|' for R, the whole completion for L) is right."""
    new = RATIONALE_LEN + 1 + ANSWER_LEN if task == "R" else ANSWER_LEN
    texts = decode(greedy(model, encode([prompt(a, b, task) for a, b in test]), new))
    got = [t[len(prompt(0, 0, task)) :] for t in texts]
    got = [g.split("|")[-1] if task == "R" else g for g in got]
    return float(np.mean([g == answer(a, b) for g, (a, b) in zip(got, test, strict=True)]))


def on_policy_loss(
    student, teacher, text: torch.Tensor, t_logits: torch.Tensor, mask: torch.Tensor, lam: float, kind: str, seed: int
):  # noqa: ANN001
    """GKD's mixed step as loss_fn(rows, step): with probability λ the divergence is taken on the student's own
    samples for the rows' prompts (scored by the teacher), otherwise on the teacher's text. Counts on-policy steps."""
    sampler = torch.Generator().manual_seed(10_000 + seed)
    counts = {"on_policy": 0, "steps": 0}

    def loss(rows: torch.Tensor, step: int) -> torch.Tensor:
        counts["steps"] += 1
        if not on_policy_step_uses_student(lam, step_rng(seed, step)):
            return L.distillation_loss(
                shifted_logits(student, text[rows]), t_logits[rows], mask[rows], kind=kind, **KINDS[kind]
            )
        counts["on_policy"] += 1
        prompts = text[rows, :PROMPT_LEN]
        completion, keep = sample_completions(
            student, prompts, torch.ones_like(prompts), COMPLETION_LEN, temperature=1.0, generator=sampler
        )
        ids = torch.cat([prompts, completion], dim=1)
        with torch.no_grad():
            teacher_logits = shifted_logits(teacher, ids)
        on_mask = completion_mask(ids, PROMPT_LEN) & torch.cat(
            [torch.zeros(len(ids), PROMPT_LEN - 1, dtype=torch.bool), keep.bool()], dim=1
        )
        return L.distillation_loss(shifted_logits(student, ids), teacher_logits, on_mask, kind=kind, **KINDS[kind])

    return loss, counts


# --- the study ---------------------------------------------------------------------------------------------


def run(size: str = "cpu") -> tuple[str, dict]:
    from _report import markdown_table

    cfg = SIZES[size]
    torch.set_num_threads(1)
    started = time.time()
    train_p = problems(cfg["train"], seed=0)
    test_p = problems(cfg["test"], seed=1, exclude=set(train_p))
    # teacher: from scratch on the script's own rationale text
    gold = encode([prompt(a, b, "R") + rationale(a, b) + "|" + answer(a, b) for a, b in train_p])
    gold_t = targets(gold, PROMPT_LEN)
    teacher = llama(cfg["teacher"], seed=0)
    t0 = time.time()
    fit(
        teacher,
        cfg["teacher_steps"],
        cfg["batch"],
        0,
        lambda r, _: L.cross_entropy(shifted_logits(teacher, gold[r]), gold_t[r]),
        len(gold),
    )
    teacher_seconds = time.time() - t0
    teacher_acc = exact_match(teacher, test_p, "R")
    # the teacher's own text for every training problem, and its logits on that text
    text = greedy(teacher, encode([prompt(a, b, "R") for a, b in train_p]), COMPLETION_LEN)
    with torch.no_grad():
        t_logits = torch.cat([shifted_logits(teacher, text[i : i + 256]) for i in range(0, len(text), 256)])
    text_t, text_mask = targets(text, PROMPT_LEN), completion_mask(text, PROMPT_LEN)
    teacher_train_acc = float(
        np.mean([t.split("|")[-1] == answer(a, b) for t, (a, b) in zip(decode(text), train_p, strict=True)])
    )
    steps, batch, lr = cfg["student_steps"], cfg["batch"], cfg["lr"]
    seconds: dict[str, list[float]] = {}

    def timed(arm: str, model, loss_fn, n: int, seed: int, task: str, n_steps: int = steps) -> float:  # noqa: ANN001
        t = time.time()
        fit(model, n_steps, batch, seed, loss_fn, n, lr=lr)
        seconds.setdefault(arm, []).append(time.time() - t)
        return exact_match(model, test_p, task)

    # off-policy divergences on the teacher's text
    div = {k: [] for k in ["cross_entropy", *KINDS]}
    checkpoints = []  # the off-policy on_policy_kind student of each seed, where the λ arms start
    for seed in range(cfg["seeds"]):
        for kind in div:
            s = llama(cfg["student"], seed=100 + seed)
            if kind == "cross_entropy":
                loss = lambda r, _, s=s: L.cross_entropy(shifted_logits(s, text[r]), text_t[r])  # noqa: E731
            else:
                loss = lambda r, _, s=s, kind=kind: L.distillation_loss(  # noqa: E731
                    shifted_logits(s, text[r]), t_logits[r], text_mask[r], kind=kind, **KINDS[kind]
                )
            div[kind].append(timed(kind, s, loss, len(text), seed, "R"))
            if kind == cfg["on_policy_kind"]:
                checkpoints.append(copy.deepcopy(s.state_dict()))

    # on-policy λ (GKD). As GKD starts from a supervised student, each λ arm continues from the seed's off-policy
    # student of the same divergence (the table above) for on_policy_steps more steps, λ = 0 included.
    kind, more = cfg["on_policy_kind"], cfg["on_policy_steps"]
    lam_acc = {lam: [] for lam in cfg["lambdas"]}
    lam_share = {lam: [] for lam in cfg["lambdas"]}
    for seed in range(cfg["seeds"]):
        for lam in cfg["lambdas"]:
            s = llama(cfg["student"], seed=100 + seed)
            s.load_state_dict(checkpoints[seed])
            loss, counts = on_policy_loss(s, teacher, text, t_logits, text_mask, lam, kind, seed)
            lam_acc[lam].append(timed(f"λ={lam}", s, loss, len(text), 1000 + seed, "R", n_steps=more))
            lam_share[lam].append(counts["on_policy"] / max(1, counts["steps"]))

    # Distilling step-by-step: label-only vs rationale multitask, on a share of the teacher's text
    completion = text[:, PROMPT_LEN:]  # the teacher's rationale, "|", answer, by position
    label_ids = torch.cat([encode([prompt(a, b, "L") for a, b in train_p]), completion[:, RATIONALE_LEN + 1 :]], dim=1)
    rat_ids = torch.cat([encode([prompt(a, b, "R") for a, b in train_p]), completion[:, :RATIONALE_LEN]], dim=1)
    label_t, rat_t = targets(label_ids, PROMPT_LEN), targets(rat_ids, PROMPT_LEN)
    frac = {(f, mode): [] for f in cfg["fractions"] for mode in ("label-only", "rationale multitask")}
    for seed in range(cfg["seeds"]):
        order = torch.randperm(len(train_p), generator=torch.Generator().manual_seed(seed))
        for f in cfg["fractions"]:
            keep = order[: max(1, round(f * len(train_p)))]
            for mode in ("label-only", "rationale multitask"):
                s = llama(cfg["student"], seed=200 + seed)
                if mode == "label-only":
                    loss = lambda r, _, s=s, k=keep: L.cross_entropy(shifted_logits(s, label_ids[k[r]]), label_t[k[r]])  # noqa: E731
                else:
                    loss = lambda r, _, s=s, k=keep: L.rationale_multitask_loss(  # noqa: E731
                        shifted_logits(s, label_ids[k[r]]), label_t[k[r]], shifted_logits(s, rat_ids[k[r]]), rat_t[k[r]]
                    )
                frac[(f, mode)].append(timed(mode, s, loss, len(keep), seed, "L"))

    def ms(v: list[float]) -> str:
        return f"{100 * np.mean(v):.1f} ± {100 * (np.std(v, ddof=1) if len(v) > 1 else 0.0):.1f}"

    def per_seed(v: list[float]) -> str:
        return ", ".join(f"{100 * x:.1f}" for x in v)

    def secs(arm: str) -> str:
        return f"{np.mean(seconds[arm]):.0f}" if arm in seconds else "—"

    names = {
        "cross_entropy": "cross-entropy on the teacher's tokens (sequence-level KD)",
        "forward_kl": "forward KL",
        "reverse_kl": "reverse KL",
        "jsd": "JSD(β=0.5)",
        "skew_forward_kl": "skew forward KL (α=0.1)",
    }
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    student_params = n_params(llama(cfg["student"], 0))
    div_table = markdown_table(
        [
            "student loss (on the teacher's text, completion tokens)",
            "test exact match, % (mean ± std)",
            "per seed",
            "train s / seed",
        ],
        [[names[k], ms(v), per_seed(v), secs(k)] for k, v in div.items()],
    )
    lam_table = markdown_table(
        [
            f"λ ({names[kind]}), {more} more steps",
            "share of those steps on the student's samples",
            "test exact match, % (mean ± std)",
            "per seed",
            "train s / seed",
        ],
        [
            [
                f"{lam:g}" + (" (off-policy)" if lam == 0.0 else ""),
                f"{np.mean(lam_share[lam]):.2f}",
                ms(lam_acc[lam]),
                per_seed(lam_acc[lam]),
                secs(f"λ={lam}"),
            ]
            for lam in cfg["lambdas"]
        ],
    )
    frac_table = markdown_table(
        ["share of the teacher's problems", "label-only", "per seed", "rationale multitask", "per seed"],
        [
            [
                f"{f:.1%} ({max(1, round(f * len(train_p)))})",
                ms(frac[(f, "label-only")]),
                per_seed(frac[(f, "label-only")]),
                ms(frac[(f, "rationale multitask")]),
                per_seed(frac[(f, "rationale multitask")]),
            ]
            for f in cfg["fractions"]
        ],
    )
    th, tl, ti, tn = cfg["teacher"]
    sh, sl, si, sn = cfg["student"]
    body = f"""CPU-sized version. Not run: the issue's teacher trained from scratch on an H100 (no GPU for this work), \
so the
teacher below is a small Llama trained on the CPU, and every figure is from one CPU thread. Run: all four divergences
off-policy, on-policy λ ∈ {{{", ".join(f"{lam:g}" for lam in cfg["lambdas"])}}} with {names[kind]}, and rationale vs \
label-only at
{", ".join(f"{f:.1%}" for f in cfg["fractions"])} of the data, {cfg["seeds"]} seeds each.
Task: {DIGITS}-digit addition, {len(train_p)} training and {len(test_p)} held-out problems,
sequences of {PROMPT_LEN + COMPLETION_LEN} tokens over a {len(VOCAB)}-symbol vocabulary.
Teacher: Llama {th} hidden × {tl} layers ({n_params(teacher):,} parameters), {cfg["teacher_steps"]} steps of batch \
{cfg["batch"]}
from scratch ({teacher_seconds:.0f} s): {100 * teacher_acc:.1f}% exact match on the held-out problems, \
{100 * teacher_train_acc:.1f}% on the
training problems it then wrote rationales for. Students: Llama {sh} hidden × {sl} layers ({student_params:,} \
parameters), fresh
weights, {steps} steps of batch {batch}, AdamW lr {lr:g} with distil's warm-up + cosine schedule
(`distil.train.loop.lr_lambda`); temperature 1. Losses: `distil.train.losses.distillation_loss` (kind as named),
`cross_entropy`, `rationale_multitask_loss`; on-policy sampling and the per-step coin: `distil.train.onpolicy`
(`sample_completions` at temperature 1, `on_policy_step_uses_student`). {time.time() - started:.0f} s in all.

Divergences, off-policy (students decode rationale then answer; exact match of the answer):

{div_table}

On-policy λ (GKD): on each step, with probability λ, the student samples rationale + answer for the step's prompts, the
teacher scores the student's tokens, and the divergence is taken there; otherwise on the teacher's text. As GKD starts
from a supervised student, every arm continues from the seed's off-policy {names[kind]} student above ({ms(div[kind])}%
exact match, {steps} steps) for {more} more steps under a schedule of their own (peak lr {lr:g}).

{lam_table}

Rationale vs label-only (Distilling step-by-step; the student answers from the label prompt, no rationale at test time):

{frac_table}
"""
    return body, {
        "teacher_acc": teacher_acc,
        "divergences": div,
        "lambdas": lam_acc,
        "on_policy_share": lam_share,
        "fractions": frac,
    }


def main(argv: list[str] | None = None) -> dict:
    from _report import sized_main

    return sized_main(
        "divergence_study", "Divergence study on generated addition (CPU-sized)", __file__, run, SIZES, __doc__, argv
    )


if __name__ == "__main__":
    main()
