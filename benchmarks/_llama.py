"""The Llama teacher / student pair both training benchmarks use, so their figures describe the same models.

``cuda`` is the anchor configuration of ../shared/anchors (teacher 1.10B, student 125M at vocabulary 32k); ``cpu``
is a pair small enough for two cores with the same shape of work.
"""

from __future__ import annotations

# hidden, layers, intermediate, heads, kv heads
SHAPES = {
    "cpu": {"teacher": (256, 4, 512, 4, 2), "student": (128, 2, 256, 4, 2), "vocab": 8000, "seq": 256, "batch": 4},
    "cuda": {
        "teacher": (2048, 22, 5632, 32, 4),
        "student": (768, 12, 2048, 12, 4),
        "vocab": 32000,
        "seq": 1024,
        "batch": 8,
    },
}


def llama_config(dims: tuple[int, int, int, int, int], vocab: int, pad_id: int, eos_id: int, **extra):
    from transformers import LlamaConfig

    hidden, layers, inter, heads, kv = dims
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=2048,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
        **extra,
    )
