"""What one training minimises: an objective owns its batch rows and its loss; the loop owns the rest.

Both objectives return, per micro-batch, a loss that is the micro-batch's *summed* loss divided by
``num_items``, the count of loss items (classify: rows; generate: answer tokens) in the whole optimiser
step across processes. The loop counts those items with :meth:`items` before the first micro-batch, so
accumulating micro-batches gives the gradient of the step's per-item mean whatever the split, for every
path: hard labels, KD, and on-policy steps alike.

On-policy distillation (GKD) is a transform of the batch, as in TRL's ``GKDTrainer.training_step``: on
a step the coin ``onpolicy.step_rng(seed, step)`` picks, the student's own samples replace the targets
and carry the teacher's view of them; the ordinary generate loss then scores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from distil.train import losses as L
from distil.train.batches import ClassifyExamples, GenerateExamples, classify_batch, generate_batch
from distil.train.extras import PROJECTOR, OnPolicyTeacher, TeacherStates, attach_projector, unwrap
from distil.train.heads import base_and_head, output_logits
from distil.train.loop import StepBatches
from distil.train.onpolicy import on_policy_batch, on_policy_step_uses_student, step_rng, student_completions
from distil.train.students import label_scores
from distil.train.teacher_states import answer_states

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distil.spec.models import DistillationSpec, TrainSpec

Batch = dict[str, Tensor]


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


# --- classify ---------------------------------------------------------------------------------------------------


@dataclass
class ClassifyObjective:
    """Label distribution at the answer position; ``kd`` False is the hard-label baseline."""

    role: str
    examples: ClassifyExamples
    validation: ClassifyExamples | None
    label_ids: Tensor | None  # [L] the label words' token ids (causal student); None: an encoder's head over the labels
    tokenizer: PreTrainedTokenizerBase
    cfg: TrainSpec
    kd: bool
    teacher_states: TeacherStates | None = None  # feature / relation KD (the distilled student only)
    rationale: GenerateExamples | None = None  # row i: rationale prompt + the teacher's rationale (empty if none)

    @property
    def rows(self) -> int:
        return len(self.examples.prompts)

    @property
    def uses_projector(self) -> bool:
        return (
            self.kd
            and self.teacher_states is not None
            and self.cfg.features.weight > 0
            and bool(self.teacher_states.feature_map)
        )

    def prepare_model(self, model: PreTrainedModel) -> None:
        if self.uses_projector:
            attach_projector(model, self.teacher_states)

    def to(self, device: torch.device) -> None:
        if self.label_ids is not None:
            self.label_ids = self.label_ids.to(device)

    def step_batches(
        self, model: PreTrainedModel, micro: list[list[int]], step_rows: list[int], step: int, rank: int
    ) -> StepBatches:
        return StepBatches([self.batch(rows, step_rows) if rows else None for rows in micro])

    def batch(self, rows: list[int], step_rows: list[int]) -> Batch:
        """Prompts, teacher distribution and hard labels of ``rows``, plus the distilled student's extras."""
        batch = classify_batch(self.tokenizer, self.examples, rows, self.cfg.max_length)
        if self.kd and self.teacher_states is not None:
            batch["teacher_states"] = self.teacher_states.states[rows]
        if self.kd and self.rationale is not None:
            batch.update(rationale_batch(self.rationale, rows, step_rows, _pad_id(self.tokenizer)))
        return batch

    def items(self, batch: Batch) -> int:
        return len(batch["hard"])

    def loss(self, model: PreTrainedModel, batch: Batch, num_items: float) -> tuple[Tensor, int]:
        return classify_loss(model, batch, self, num_items)

    @torch.no_grad()
    def validation_fidelity(self, model: PreTrainedModel, device: torch.device) -> float | None:
        """Top-1 agreement of the student's label with the teacher's on the validation split."""
        data = self.validation
        if data is None:
            return None
        agree = 0
        for start in range(0, len(data.prompts), self.cfg.batch_size):
            rows = list(range(start, min(len(data.prompts), start + self.cfg.batch_size)))
            batch = classify_batch(self.tokenizer, data, rows, self.cfg.max_length)
            logits = label_scores(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device), self.label_ids
            )
            agree += int((logits.argmax(-1).cpu() == batch["teacher_probs"].argmax(-1)).sum())
        return agree / max(len(data.prompts), 1)


def rationale_batch(data: GenerateExamples, rows: list[int], step_rows: list[int], pad_id: int) -> Batch:
    """The rationale targets of the rows that have one, normalised by the rationale tokens of the whole step."""
    with_rationale = [i for i in rows if data.answer_ids[i]]
    norm = data.tokens(step_rows)
    if not with_rationale or not norm:
        return {}
    r = generate_batch(data, with_rationale, pad_id, with_topk=False)
    return {
        "rationale_input_ids": r["input_ids"],
        "rationale_attention_mask": r["attention_mask"],
        "rationale_targets": r["targets"],
        "rationale_norm": torch.tensor(float(norm)),
    }


def classify_loss(
    model: PreTrainedModel, batch: Batch, objective: ClassifyObjective, num_items: float
) -> tuple[Tensor, int]:
    """Summed loss of the micro-batch / num_items; logits only at the answer position, only label rows.

    The distilled student adds, when configured: hidden-state matching through the learned projector
    (``features.weight``), relation KD on the answer-position states (``features.relation_weight``, a
    per-micro-batch mean weighted by its share of the step), and the rationale target (``rationale_weight``).
    """
    cfg = objective.cfg
    tokens = int(batch["attention_mask"].sum())
    with_states = objective.kd and "teacher_states" in batch
    states = None
    if with_states:
        states = answer_states(
            model, batch["input_ids"], batch["attention_mask"], objective.teacher_states.student_layers
        )  # [B, M + 1, H]
        logits = output_logits(model, states[:, -1], rows=objective.label_ids).float()
    else:
        logits = label_scores(model, batch["input_ids"], batch["attention_mask"], objective.label_ids)  # [B, L]
    ce = L.cross_entropy(logits, batch["hard"], num_items=num_items)
    if not objective.kd:
        return ce, tokens
    d = cfg.distillation
    kd = L.distillation_loss(
        logits,
        L.probs_to_logprobs(batch["teacher_probs"]),
        kind=d.loss,
        temperature=d.temperature,
        beta=d.beta,
        alpha=d.skew_alpha,
        num_items=num_items,
    )
    loss = L.mixed_loss(ce, kd, d.alpha)
    if states is not None:
        loss = with_hidden_state_terms(loss, model, states, batch["teacher_states"], objective, num_items)
    if "rationale_targets" in batch and d.rationale_weight > 0:
        rationale, rationale_tokens = rationale_term(model, batch, cfg.chunk_size)
        loss = loss + d.rationale_weight * rationale
        tokens += rationale_tokens
    return loss, tokens


def with_hidden_state_terms(
    loss: Tensor, model: PreTrainedModel, states: Tensor, theirs: Tensor, objective: ClassifyObjective, num_items: float
) -> Tensor:
    """``loss`` plus feature matching through the projector plus relation KD; states [B, M + 1, H],
    theirs [B, M + 1, Ht]."""
    features = objective.cfg.features
    total = loss
    if objective.uses_projector:
        pairs = sorted(objective.teacher_states.feature_map.items())
        student_states = {s: states[:, m : m + 1] for m, (s, _) in enumerate(pairs)}
        teacher_states = {t: theirs[:, m : m + 1] for m, (_, t) in enumerate(pairs)}
        projector = getattr(unwrap(model), PROJECTOR)
        total = total + features.weight * L.feature_loss(
            student_states, teacher_states, dict(pairs), projector, kind=features.kind, num_items=num_items
        )
    if features.relation_weight > 0 and len(states) >= 3:
        share = len(states) / num_items
        total = total + features.relation_weight * share * L.relation_loss(
            states[:, -1], theirs[:, -1], kind=features.relation_kind
        )
    return total


def rationale_term(model: PreTrainedModel, batch: Batch, chunk_size: int) -> tuple[Tensor, int]:
    """Cross-entropy on the rationale tokens / the step's rationale token count, and the tokens read."""
    decoder, head = base_and_head(model)
    hidden = decoder(
        input_ids=batch["rationale_input_ids"], attention_mask=batch["rationale_attention_mask"]
    ).last_hidden_state
    keep = batch["rationale_targets"] != -100
    summed = L.chunked_head_loss(
        hidden[keep], head, L.summed_cross_entropy_chunk(batch["rationale_targets"][keep]), chunk_size
    )
    return summed / batch["rationale_norm"], int(batch["rationale_attention_mask"].sum())


# --- generate ---------------------------------------------------------------------------------------------------


@dataclass
class GenerateObjective:
    """The teacher's text (sequence-level KD), its top-k when known (token-level KD), and on some steps the
    student's own samples scored by the live teacher (on-policy); ``kd`` False is the hard-label baseline."""

    role: str
    examples: GenerateExamples
    validation: GenerateExamples | None
    tokenizer: PreTrainedTokenizerBase
    cfg: TrainSpec
    kd: bool
    teacher: OnPolicyTeacher | None = None  # on-policy steps (the distilled student only)
    pad_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.pad_id = _pad_id(self.tokenizer)

    @property
    def rows(self) -> int:
        return len(self.examples.answer_ids)

    def prepare_model(self, model: PreTrainedModel) -> None:
        return None

    def to(self, device: torch.device) -> None:
        if self.teacher is not None:
            self.teacher.model.to(device)

    def on_policy_step(self, step: int) -> bool:
        """The step's coin: the same on every process and after a resume."""
        return self.teacher is not None and on_policy_step_uses_student(
            self.cfg.on_policy.fraction, step_rng(self.cfg.seed, step)
        )

    def step_batches(
        self, model: PreTrainedModel, micro: list[list[int]], step_rows: list[int], step: int, rank: int
    ) -> StepBatches:
        notes = {} if self.teacher is None else {"on_policy": self.on_policy_step(step)}
        if not notes.get("on_policy"):
            with_topk = self.kd and (self.examples.has_topk or self.examples.has_aligned)
            return StepBatches(
                [generate_batch(self.examples, rows, self.pad_id, with_topk) if rows else None for rows in micro], notes
            )
        mine = [i for rows in micro for i in rows]
        samples = dict(
            zip(mine, self.student_samples(model, mine, seed=self.cfg.seed * 1_000_003 + step * 97 + rank), strict=True)
        )
        batches = [self.on_policy_batch(rows, samples) if rows else None for rows in micro]
        return StepBatches(batches, notes)

    def student_samples(self, model: PreTrainedModel, rows: list[int], seed: int) -> list[list[int]]:
        """The student's own completion for each of ``rows``: the on-policy data of a step."""
        on_policy = self.cfg.on_policy
        return student_completions(
            model,
            [self.examples.prompt_ids[i] for i in rows],
            batch_size=self.cfg.batch_size,
            max_new_tokens=self.teacher.max_new_tokens,
            temperature=on_policy.temperature,
            eos_id=self.teacher.eos_id,
            pad_id=self.pad_id,
            seed=seed,
        )

    def on_policy_batch(self, rows: list[int], samples: dict[int, list[int]]) -> Batch:
        return on_policy_batch(
            [self.examples.prompt_ids[i] for i in rows],
            [self.examples.teacher_prompt_ids[i] for i in rows],
            [samples[i] for i in rows],
            self.pad_id,
        )

    def items(self, batch: Batch) -> int:
        return int((batch["targets"] != -100).sum())

    def loss(self, model: PreTrainedModel, batch: Batch, num_items: float) -> tuple[Tensor, int]:
        teacher = self.teacher.model if self.teacher is not None else None
        return generate_loss(model, batch, self.cfg, num_items, kd=self.kd, teacher=teacher)

    @torch.no_grad()
    def validation_fidelity(self, model: PreTrainedModel, device: torch.device) -> float | None:
        """Top-1 agreement of the student's next answer token with the teacher's text on the validation split."""
        data = self.validation
        if data is None:
            return None
        agree = total = 0
        size, chunk = self.cfg.batch_size, self.cfg.chunk_size
        for start in range(0, len(data.answer_ids), size):
            batch = generate_batch(
                data, list(range(start, min(len(data.answer_ids), start + size))), self.pad_id, with_topk=False
            )
            decoder, _ = base_and_head(model)
            hidden = decoder(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).last_hidden_state
            keep = batch["targets"] != -100
            selected, targets = hidden[keep.to(device)], batch["targets"][keep].to(device)
            agree += sum(
                int((output_logits(model, selected[a : a + chunk]).argmax(-1) == targets[a : a + chunk]).sum())
                for a in range(0, len(selected), chunk)
            )
            total += len(targets)
        return agree / max(total, 1)


def generate_loss(
    model: PreTrainedModel,
    batch: Batch,
    cfg: TrainSpec,
    num_items: float,
    kd: bool = True,
    teacher: PreTrainedModel | None = None,
) -> tuple[Tensor, int]:
    """Summed loss over the answer positions / num_items, through the chunked head: the divergence from the
    live ``teacher`` when the batch carries its view (on-policy), else α·CE + (1-α)·top-k KD when it carries
    the teacher's top-k (by id, or by text-aligned group through ULD when the tokenizers differ), else CE on
    the teacher's text (sequence-level KD)."""
    decoder, head = base_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["targets"] != -100  # [B, S]
    selected = hidden[keep]  # [N, H]: only answer positions reach the head
    targets, joined = batch["targets"][keep], None
    alpha = cfg.distillation.alpha
    if "teacher_input_ids" in batch:
        chunk = teacher_divergence_chunk(teacher, batch, cfg.distillation)
    elif kd and "uld_groups" in batch:
        groups = batch["uld_groups"]
        joined = torch.cat([groups.new_zeros(1, dtype=torch.bool), (groups[1:] == groups[:-1]) & (groups[1:] >= 0)])
        uld = L.summed_uld_chunk(targets, groups, batch["uld_teacher_logprobs"], batch["uld_teacher_chain"])
        chunk = mixed_chunk(targets, uld, alpha)
    elif kd and "topk_ids" in batch:
        chunk = mixed_chunk(targets, L.summed_topk_chunk(batch["topk_ids"], batch["topk_logprobs"]), alpha)
    else:
        chunk = L.summed_cross_entropy_chunk(targets)
    summed = L.chunked_head_loss(selected, head, chunk, cfg.chunk_size, joined=joined)
    return summed / num_items, int(batch["attention_mask"].sum())


def mixed_chunk(targets: Tensor, kd_chunk: L.ChunkLoss, alpha: float) -> L.ChunkLoss:
    """α·CE on the teacher's tokens + (1-α)·``kd_chunk`` (top-k KD or ULD against its cached log-probabilities),
    summed per chunk.

    A term of weight 0 is not computed at all (pure KD, the default, skips the cross-entropy pass over the
    vocabulary): its value and gradient would be zero anyway."""
    ce_chunk = L.summed_cross_entropy_chunk(targets)
    if alpha == 0.0:
        return kd_chunk
    if alpha == 1.0:
        return ce_chunk

    def chunk(logits: Tensor, a: int, b: int) -> Tensor:
        return alpha * ce_chunk(logits, a, b) + (1 - alpha) * kd_chunk(logits, a, b)

    return chunk


def teacher_divergence_chunk(teacher: PreTrainedModel | None, batch: Batch, d: DistillationSpec) -> L.ChunkLoss:
    """The divergence ``d.loss`` from the teacher reading its own prompt + the same tokens; its states are
    taken once without gradient and projected to its vocabulary chunk by chunk, like the student's."""
    if teacher is None:
        raise ValueError("an on-policy batch needs the teacher that scores it")
    with torch.no_grad():
        decoder, _ = base_and_head(teacher)
        hidden = decoder(
            input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]
        ).last_hidden_state
        theirs = hidden[batch["teacher_targets"] != -100]  # [N, Ht], the same N positions in the same order
    return L.summed_divergence_chunk(
        lambda a, b: output_logits(teacher, theirs[a:b]),
        kind=d.loss,
        temperature=d.temperature,
        beta=d.beta,
        alpha=d.skew_alpha,
    )
