"""Model compression with MUNGE (Bucilă, Caruana & Niculescu-Mizil 2006) on load_breast_cancer and load_wine.

An ensemble teacher (random forest + gradient boosting + MLP, probabilities averaged) and a small MLP
student trained on (a) the original labels, (b) the teacher's probabilities on the original inputs,
(c) the teacher's probabilities on the original inputs plus MUNGE rows (``distil.data.tabular.munge``),
(d) the teacher's probabilities on the original inputs plus as many uniform random rows (inside the
training data's bounding box). Hard labels go through ``cross_entropy``, teacher probabilities
through ``probs_to_logprobs`` and ``forward_kl`` (T = 1), all from ``distil.train.losses``.

    python benchmarks/munge.py              # full size, writes docs/benchmarks.md
    python benchmarks/munge.py --size tiny --no-write
"""

from __future__ import annotations

import os
import pickle
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mlp import Targets, count_params, logits_of, mean_std, mlp, train  # noqa: E402

from distil.data.tabular import munge  # noqa: E402
from distil.train.losses import probs_to_logprobs  # noqa: E402

SIZES = {
    "full": dict(
        seeds=5,
        trees=200,
        boost=100,
        teacher_mlp=(64, 64),
        student_hidden=4,
        epochs=60,
        synthetic_factor=10,
        latency_repeats=7,
        mlp_iter=1000,
    ),
    "tiny": dict(
        seeds=1,
        trees=5,
        boost=5,
        teacher_mlp=(8,),
        student_hidden=4,
        epochs=2,
        synthetic_factor=2,
        latency_repeats=2,
        mlp_iter=50,
    ),
}
DATASETS = ("breast_cancer", "wine")
ARMS = {
    "a": "(a) original labels",
    "b": "(b) teacher probs, original inputs",
    "c": "(c) teacher probs, original + MUNGE inputs",
    "d": "(d) teacher probs, original + uniform random inputs",
}


class Ensemble:
    """Average of the members' predicted probabilities."""

    def __init__(self, seed: int, cfg: dict):
        from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
        from sklearn.neural_network import MLPClassifier

        self.members = [
            RandomForestClassifier(n_estimators=cfg["trees"], random_state=seed),
            GradientBoostingClassifier(n_estimators=cfg["boost"], random_state=seed),
            MLPClassifier(hidden_layer_sizes=cfg["teacher_mlp"], max_iter=cfg["mlp_iter"], random_state=seed),
        ]

    def fit(self, x: np.ndarray, y: np.ndarray) -> Ensemble:
        for m in self.members:
            m.fit(x, y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.predict_proba(x) for m in self.members], axis=0)


def load(name: str, seed: int):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_tr)
    return scaler.transform(x_tr), scaler.transform(x_te), y_tr, y_te


def metrics(probs: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    probs = np.clip(probs, 1e-7, 1.0)
    probs = probs / probs.sum(1, keepdims=True)
    labels = list(range(probs.shape[1]))
    auc = (
        roc_auc_score(y, probs[:, 1])
        if probs.shape[1] == 2
        else roc_auc_score(y, probs, multi_class="ovr", labels=labels)
    )
    return {"acc": accuracy_score(y, probs.argmax(1)), "logloss": log_loss(y, probs, labels=labels), "auc": auc}


def median_latency(predict, x: np.ndarray, repeats: int) -> float:
    """Median seconds for one call that predicts every row of x."""
    predict(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_one(name: str, seed: int, cfg: dict) -> dict:
    x_tr, x_te, y_tr, y_te = load(name, seed)
    n, d = x_tr.shape
    classes = int(y_tr.max()) + 1
    teacher = Ensemble(seed, cfg).fit(x_tr, y_tr)
    extra = cfg["synthetic_factor"] * n
    rng = np.random.default_rng(seed)
    inputs = {
        "b": x_tr,
        "c": np.concatenate([x_tr, munge(x_tr, extra, p=0.5, s=1.0, seed=seed)]),
        "d": np.concatenate([x_tr, rng.uniform(x_tr.min(0), x_tr.max(0), size=(extra, d))]),
    }
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    out = {"teacher": metrics(teacher.predict_proba(x_te), y_te), "n": n, "extra": extra}
    students = {}
    for arm in ARMS:
        torch.manual_seed(seed)
        model = mlp(d, [cfg["student_hidden"]], classes)
        if arm == "a":
            data = Targets(f(x_tr), torch.tensor(y_tr))
        else:
            x = inputs[arm]
            data = Targets(f(x), torch.full((len(x),), -100), probs_to_logprobs(f(teacher.predict_proba(x))))
        # the same number of optimiser steps for every arm, so a bigger transfer set is not also a longer training
        epochs = max(1, round(cfg["epochs"] * n / len(data.x)))
        train(model, data, epochs=epochs, seed=seed, batch_size=32, lr=1e-2, alpha=0.0 if arm != "a" else 1.0)
        probs = logits_of(model, f(x_te)).softmax(-1).numpy()
        out[arm] = metrics(probs, y_te)
        students[arm] = model
    student = students["c"]
    x_te_t = f(x_te)
    with torch.no_grad():
        t_student = median_latency(lambda _: student(x_te_t), x_te, cfg["latency_repeats"])
    t_teacher = median_latency(teacher.predict_proba, x_te, cfg["latency_repeats"])
    out["size_ratio"] = len(pickle.dumps(teacher.members)) / len(pickle.dumps(student.state_dict()))
    out["latency_ratio"] = t_teacher / t_student
    out["student_params"] = count_params(student)
    return out


def run(size: str = "full") -> tuple[str, dict]:
    from _report import markdown_table

    cfg = SIZES[size]
    torch.set_num_threads(1)
    started = time.time()
    results = {name: [run_one(name, seed, cfg) for seed in range(cfg["seeds"])] for name in DATASETS}
    sections, verdicts = [], {}
    for name, rs in results.items():
        rows = []
        for key, label in [("teacher", "teacher ensemble (RF + GB + MLP)")] + list(ARMS.items()):
            rows.append([label] + [mean_std([r[key][m] for r in rs], 3) for m in ("acc", "logloss", "auc")])
        mean = {arm: {m: np.mean([r[arm][m] for r in rs]) for m in ("acc", "logloss", "auc")} for arm in ARMS}
        better = lambda x, y, m, mean=mean: mean[x][m] < mean[y][m] if m == "logloss" else mean[x][m] > mean[y][m]  # noqa: E731
        claims = {
            "MUNGE (c) > original (b)": ("c", "b"),
            "original (b) > random (d)": ("b", "d"),
            "distilled (b) > labels (a)": ("b", "a"),
            "distilled + MUNGE (c) > labels (a)": ("c", "a"),
        }
        verdicts[name] = {
            claim: {m: bool(better(x, y, m)) for m in ("acc", "logloss", "auc")} for claim, (x, y) in claims.items()
        }
        verdict_rows = [
            [claim] + ["yes" if v[m] else "no" for m in ("acc", "logloss", "auc")]
            for claim, v in verdicts[name].items()
        ]
        sections.append(
            f"**{name}** ({rs[0]['n']} train rows, {rs[0]['extra']} synthetic rows in (c) and (d), 30% test; student "
            f"{rs[0]['student_params']} parameters; teacher/student size "
            f"{np.median([r['size_ratio'] for r in rs]):.0f}× (pickled bytes), latency "
            f"{np.median([r['latency_ratio'] for r in rs]):.0f}× (median, whole test set in one call))\n\n"
            + markdown_table(["model", "accuracy", "log-loss", "AUC"], rows)
            + "\n\nDoes the expected ordering hold on the means (strictly better; lower log-loss)?\n\n"
            + markdown_table(["claim", "accuracy", "log-loss", "AUC"], verdict_rows)
        )
    body = (
        f"Sizes: {cfg['seeds']} seeds (a fresh stratified 70/30 split each), teacher = random forest ({cfg['trees']} "
        f"trees) + gradient boosting ({cfg['boost']} stages) + MLP {cfg['teacher_mlp']} (scikit-learn), student MLP "
        f"with one hidden layer of {cfg['student_hidden']} units, AdamW lr 1e-2, batch 32, the same number of steps "
        f"in every arm ({cfg['epochs']} epochs of the original training set); MUNGE p = 0.5, s = 1, "
        f"{cfg['synthetic_factor']}× the training set; random rows uniform in the standardised training data's "
        f"bounding box. Mean ± std over seeds; one CPU thread; {time.time() - started:.0f} s in all. Losses from "
        "`distil.train.losses` (`cross_entropy` for (a), `forward_kl` on `probs_to_logprobs` of the teacher for "
        "(b)–(d)); the MUNGE generator is `distil.data.tabular.munge`, which `data.synthetic: munge` uses for "
        "tabular seeds.\n\n" + "\n\n".join(sections)
    )
    return body, {"results": results, "verdicts": verdicts}


def main(argv: list[str] | None = None) -> dict:
    from _report import sized_main

    return sized_main(
        "munge",
        "MUNGE model compression (Bucilă et al. 2006) on breast cancer and wine",
        __file__,
        run,
        SIZES,
        __doc__,
        argv,
    )


if __name__ == "__main__":
    main()
