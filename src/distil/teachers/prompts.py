"""The one place a generate task's teacher prompt is written.

The teacher writes a generate task's answers after ``task.instruction`` with ``{input}`` filled in (the
bare input when the instruction has no slot), and a local chat model reads that inside its chat
template. Labelling, evaluation, the training cache of the teacher's log-probabilities and on-policy
scoring must all show the teacher this same text, or it is judged in a context it did not write in.
"""

from __future__ import annotations

from typing import Any


def generation_prompt(instruction: str, text: str) -> str:
    """The teacher's prompt for ``text``: the instruction with ``{input}`` filled in, else the bare input."""
    return instruction.replace("{input}", text) if "{input}" in instruction else text


def in_chat_template(tokenizer: Any, prompt: str, chat: bool = True) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template, ready for the answer; unchanged when
    ``chat`` is off or the tokenizer has no template (a base model continues raw text)."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def generation_prompt_ids(tokenizer: Any, instruction: str, text: str) -> list[int]:
    """The token ids a local teacher is given for ``text``: :func:`generation_prompt` in its chat template.

    Special tokens are added only without a template (the template writes its own).
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    rendered = in_chat_template(tokenizer, generation_prompt(instruction, text))
    return list(tokenizer(rendered, add_special_tokens=not chat).input_ids)
