"""The one place where a causal LM's hidden states become vocabulary logits, by the family's own rule.

Everything in ``distil.train`` (and the export) that needs logits from hidden states (label logits, the
chunked head loss, the teacher cache, on-policy scoring, validation) goes through :func:`output_logits`,
:func:`output_head` or :func:`head_logits`.

``model.lm_head(hidden)`` is not the whole story. A family's ``forward`` may do more after the
projection, and a logit computed without it is not the model's logit (on tiny random models the gap
was 2.7-27.6):

- the LM head's **bias** (Phi, GPT-J, ...): ``F.linear(hidden, weight, bias)``;
- Cohere / Cohere2 multiply by ``logit_scale``;
- Granite divides by ``config.logits_scaling``;
- Gemma 2 / 3 (and nanochat) soft-cap: ``tanh(x / c) * c`` with ``c = config.final_logit_softcapping``.

:func:`output_head` reads the rule off a model once; :class:`OutputHead` applies it to any slice of
the vocabulary (the label rows of a classifier, or all of it, chunk by chunk). Every logit distil
computes from hidden states goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def head_logits(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    multiplier: float | None = None,
    divisor: float | None = None,
    softcap: float | None = None,
) -> Tensor:
    """Logits from hidden states: ``hidden [..., H]``, ``weight [V, H]``, ``bias [V]`` -> ``[..., V]``.

    The order is the families' own: project (with bias), scale, then soft-cap. No family does both a
    scale and a cap; the order is still fixed so the rule is one function.
    """
    logits = F.linear(hidden, weight, bias)
    if multiplier is not None:
        logits = logits * multiplier
    if divisor is not None:
        logits = logits / divisor
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


@dataclass(frozen=True)
class OutputHead:
    """One model's LM head (its parameters) and the rule its forward applies after it."""

    weight: Tensor  # [V, H]
    bias: Tensor | None = None  # [V]
    multiplier: float | None = None  # Cohere's logit_scale
    divisor: float | None = None  # Granite's logits_scaling
    softcap: float | None = None  # Gemma 2/3's final_logit_softcapping

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def project(self, hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The rule with the given parameters (the chunked loss passes detached copies to differentiate)."""
        return head_logits(hidden, weight, bias, self.multiplier, self.divisor, self.softcap)

    def __call__(self, hidden: Tensor, rows: Tensor | None = None) -> Tensor:
        """Logits ``[..., V]`` of ``hidden [..., H]``, or ``[..., len(rows)]`` for the vocabulary ``rows`` only.

        Every step of the rule acts per vocabulary entry, so the logits of a few rows are exactly
        those rows of the full logits.
        """
        if rows is None:
            return self.project(hidden, self.weight, self.bias)
        return self.project(hidden, self.weight[rows], None if self.bias is None else self.bias[rows])


def _unwrapped(model: Any) -> Any:
    """The transformers model inside a peft and/or DDP wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "module", inner)


def output_head(model: PreTrainedModel | nn.Module) -> OutputHead:
    """The head of a causal LM (peft, DDP or plain) with its family's rule after the projection."""
    inner = _unwrapped(model)
    linear = inner.get_output_embeddings()
    config = inner.config
    multiplier = getattr(inner, "logit_scale", None)  # Cohere keeps config.logit_scale on the model
    if isinstance(multiplier, Tensor):
        multiplier = float(multiplier)
    return OutputHead(
        weight=linear.weight,
        bias=getattr(linear, "bias", None),
        multiplier=None if multiplier is None else float(multiplier),
        divisor=_float_or_none(getattr(config, "logits_scaling", None)),
        softcap=_float_or_none(getattr(config, "final_logit_softcapping", None)),
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def decoder_of(model: PreTrainedModel | nn.Module) -> nn.Module:
    """The part of a model that returns hidden states (``last_hidden_state``: a causal LM's decoder, an encoder
    student's encoder), peft or not."""
    inner = _unwrapped(model)
    return getattr(inner, inner.base_model_prefix)


def base_and_head(model: PreTrainedModel | nn.Module) -> tuple[nn.Module, OutputHead]:
    """(the decoder that returns hidden states, the output head with its family's rule) of a causal LM,
    peft or DDP-wrapped or not."""
    return decoder_of(model), output_head(model)


def output_logits(model: PreTrainedModel | nn.Module, hidden: Tensor, rows: Tensor | None = None) -> Tensor:
    """The model's own logits for ``hidden [..., H]`` (its last hidden state): ``[..., V]``, or the
    vocabulary ``rows`` only."""
    return output_head(model)(hidden, rows)
