"""What the distilled student learns from beyond the records, built before training starts.

- the live teacher for on-policy steps (generate; ``train.on_policy``);
- the teacher's answer-position hidden states for feature / relation KD, and the learned projector
  that maps the student's states onto them (classify; ``train.features``);
- the rationale targets of Distilling step-by-step (classify; ``train.distillation.rationale_weight``);
- the teacher's top-k for every answer token, from the records or the offline cache (generate).

Which combinations may be asked for is settled when the spec loads (``distil check``); what is left
here needs the models themselves: layer ranges and the tokenizers' vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from distil.errors import TrainError
from distil.teachers.loading import load_causal_lm, local_model_folder
from distil.train import losses as L
from distil.train.api_topk import attach_api_topk
from distil.train.batches import ClassifyExamples, GenerateExamples
from distil.train.cross_tokenizer import attach_aligned_teacher
from distil.train.logit_cache import build_or_load_cache, teacher_prompt_ids
from distil.train.teacher_states import check_layers, teacher_answer_states
from distil.train.vocab import require_same_vocabulary, same_vocabulary

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.console import Console
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distil.spec.io import Project
    from distil.spec.models import Spec
    from distil.train.students import StudentBuild

RATIONALE_TEMPLATE = "{input}\nRationale:"  # the second task of Distilling step-by-step; never used at inference
PROJECTOR = (
    "distil_feature_projector"  # the learned student -> teacher map, trained with the student, never saved with it
)


@dataclass
class TeacherStates:
    """The teacher's hidden states at each training example's answer position, and how layers pair up."""

    states: torch.Tensor  # [n, M + 1, Ht]: the mapped teacher layers, then the last
    feature_map: dict[int, int]  # student hidden-state index -> teacher index

    @property
    def student_layers(self) -> list[int]:
        """The student's hidden-state indices to read: the mapped ones in order, then the last."""
        return [s for s, _ in sorted(self.feature_map.items())] + [-1]


@dataclass
class OnPolicyTeacher:
    """The local teacher kept in memory to score the student's own samples."""

    model: PreTrainedModel
    max_new_tokens: int
    eos_id: int | None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model the projector was attached to, inside DDP's wrapper or not."""
    return getattr(model, "module", model)


def attach_projector(model: torch.nn.Module, teacher: TeacherStates) -> None:
    """Give ``model`` the learned student -> teacher map for its mapped layers (trained with it, stripped when
    saved)."""
    student_dim, teacher_dim = int(model.config.hidden_size), int(teacher.states.shape[-1])
    model.add_module(PROJECTOR, L.FeatureProjector(student_dim, teacher_dim, teacher.student_layers[:-1]))


def on_policy_teacher(project: Project, build: StudentBuild, examples: GenerateExamples) -> OnPolicyTeacher | None:
    """The teacher for on-policy steps (None when ``train.on_policy.fraction`` is 0); gives ``examples`` the
    teacher's own prompts, after which it scores the student's completions."""
    spec = project.spec
    if spec.train.on_policy.fraction <= 0:
        return None
    model, tokenizer, _ = load_causal_lm(spec.teacher().source)
    require_same_vocabulary(tokenizer, build.tokenizer, what="on-policy distillation")
    if not examples.teacher_prompt_ids:
        examples.teacher_prompt_ids = teacher_prompt_ids(tokenizer, spec.task.instruction, examples.inputs)
    return OnPolicyTeacher(
        model.to(next(build.model.parameters()).device),
        spec.train.on_policy.max_new_tokens or spec.task.max_new_tokens,
        build.tokenizer.eos_token_id,
    )


def teacher_states_for(
    project: Project, build: StudentBuild, examples: ClassifyExamples, console: Console | None
) -> TeacherStates | None:
    """The teacher's states for feature / relation KD (None when neither is asked for); checks the layer map."""
    from transformers import AutoConfig  # slow to import; only runs with hidden-state KD pay for it

    spec = project.spec
    features = spec.train.features
    if not features.wants_teacher_states:
        return None
    source = spec.teacher().source
    teacher_layers = int(AutoConfig.from_pretrained(str(local_model_folder(source)[0])).num_hidden_layers)
    mapping = dict(features.layers) if features.layers else {-1: -1}
    check_layers(mapping, int(build.model.config.num_hidden_layers), teacher_layers)
    layers = [t for _, t in sorted(mapping.items())] + [-1]
    states = teacher_answer_states(
        project, source, examples.prompts, layers, build.tokenizer, spec.train.max_length, console=console
    )
    return TeacherStates(states, mapping)


def rationale_targets(
    project: Project, tokenizer: PreTrainedTokenizerBase, examples: ClassifyExamples, console: Console | None
) -> GenerateExamples | None:
    """The rationale task's examples (None when ``rationale_weight`` is 0 or no record carries a rationale)."""
    if project.spec.train.distillation.rationale_weight <= 0:
        return None
    if not any(examples.rationales):
        if console is not None:
            console.print(
                "[yellow]train.distillation.rationale_weight is set but no training record carries a rationale "
                "(curate again after `distil generate` with data.rationales: true); training on labels only[/yellow]"
            )
        return None
    return rationale_examples(examples, tokenizer, project.spec.train.max_length)


def rationale_examples(data: ClassifyExamples, tokenizer: PreTrainedTokenizerBase, max_length: int) -> GenerateExamples:
    """Row i: "<input>\\nRationale:" then the teacher's rationale and EOS (no answer tokens when it has none)."""
    out = GenerateExamples([], [])
    for text, rationale in zip(data.inputs, data.rationales, strict=True):
        answer = (
            tokenizer(" " + rationale, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            if rationale
            else []
        )
        answer = answer[: max(1, max_length // 2)] if answer else []
        prompt = tokenizer(RATIONALE_TEMPLATE.replace("{input}", text), add_special_tokens=False).input_ids
        out.prompt_ids.append(prompt[-(max_length - len(answer)) :])
        out.answer_ids.append(answer)
    return out


def uses_uld(spec: Spec, student_tokenizer: PreTrainedTokenizerBase) -> bool:
    """Token-level KD goes through text-aligned ULD when asked for (``distillation.loss: uld``) or when the local
    teacher's tokenizer differs from the student's (ids cannot be compared)."""
    from transformers import AutoTokenizer  # slow to import; only a generate run with a local teacher asks

    if spec.train.distillation.loss == "uld":
        return True
    folder = local_model_folder(spec.teacher().source)[0]
    return not same_vocabulary(AutoTokenizer.from_pretrained(str(folder)), student_tokenizer)[0]


def attach_logit_cache(
    project: Project,
    examples: GenerateExamples,
    tokenizer: PreTrainedTokenizerBase,
    accelerator: Accelerator,
    console: Console | None,
) -> None:
    """Give generate examples the teacher's top-k for every answer token: from the records when they carry
    it (an API teacher's as text, :mod:`distil.train.api_topk`), else from the offline cache (built once from a
    local teacher); through text-aligned groups (ULD) when the teacher's tokenizer differs from the student's
    or ``distillation.loss`` is ``uld``. Leaves
    sequence-level KD alone when neither is possible, or when ``alpha`` is 1 (pure sequence-level KD needs no
    teacher logits)."""
    spec = project.spec
    teacher = spec.teacher()
    if spec.train.distillation.alpha >= 1.0:
        return
    if examples.has_api_topk:  # an API teacher's top logprobs, as text: by id when they map, else by text (ULD)
        by_text = spec.train.distillation.loss == "uld"
        attach_api_topk(
            examples, tokenizer, spec.train.max_length, by_text, console if accelerator.is_main_process else None
        )
        return
    if teacher.scheme not in ("hf", "gguf"):
        return
    k = spec.train.distillation.topk_cache_k
    if uses_uld(spec, tokenizer):
        if accelerator.is_main_process:  # one process builds the cache, the others read it
            attach_aligned_teacher(
                project, teacher.source, examples, k, tokenizer, console=console, device=accelerator.device
            )
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            attach_aligned_teacher(project, teacher.source, examples, k, tokenizer)
        return
    if examples.has_topk:
        return
    cache = None
    if accelerator.is_main_process:  # one process builds the cache, the others read it
        cache = build_or_load_cache(
            project, teacher.source, examples, k, tokenizer, console=console, device=accelerator.device
        )
    accelerator.wait_for_everyone()
    if cache is None:
        cache = build_or_load_cache(project, teacher.source, examples, k, tokenizer)
    if cache is None:
        return
    if len(cache) != len(examples.answer_ids) or len(cache.example(0)[0]) != len(examples.answer_ids[0]):
        raise TrainError(
            "the offline teacher cache does not match the training examples",
            hint="delete .distil/cache/topk and train again",
        )
    examples.topk_reader = cache.example
