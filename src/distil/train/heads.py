"""The one place where a causal LM's hidden states become vocabulary logits.

Everything in ``distil.train`` that needs logits from hidden states (label logits, the chunked head loss,
the teacher cache, on-policy scoring, validation) goes through :func:`output_logits` or
:func:`head_logits`, so a model family whose head does more than a matrix product is handled here once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def base_and_head(model: PreTrainedModel | nn.Module) -> tuple[nn.Module, Tensor]:
    """(the decoder that returns hidden states, the LM head weight [V, H]) of a causal LM, peft or DDP-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(inner, "module", inner)  # DDP
    return getattr(inner, inner.base_model_prefix), inner.get_output_embeddings().weight


def head_logits(hidden: Tensor, weight: Tensor) -> Tensor:
    """Logits [N, V'] of hidden states [N, H] through head rows ``weight`` [V', H] (all of them, or a subset)."""
    return hidden @ weight.T


def output_logits(model: PreTrainedModel | nn.Module, hidden: Tensor, rows: Tensor | None = None) -> Tensor:
    """Logits of ``model``'s head for hidden states [N, H]: [N, V], or [N, len(rows)] for the head rows ``rows``."""
    _, weight = base_and_head(model)
    return head_logits(hidden, weight if rows is None else weight[rows])
