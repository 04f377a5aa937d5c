"""Write a Llama-architecture student as one GGUF file, the format llama.cpp and the runtimes built on it load.

The file follows llama.cpp's conventions (its ``convert_hf_to_gguf.py`` and the ``gguf`` package's tables), so
the same file opens in llama.cpp and in transformers' GGUF loader (``from_pretrained(folder, gguf_file=...)``):

* tensor names from ``gguf``'s own name map for ``MODEL_ARCH.LLAMA`` (``token_embd``, ``blk.N.attn_q`` ...);
  a tied LM head writes no ``output.weight`` (readers tie it back to ``token_embd``);
* the query and key projections permuted into llama.cpp's rotary layout (pairs of halves interleaved),
  which readers permute back;
* hyper-parameters under ``llama.*`` and the byte-level BPE vocabulary under ``tokenizer.ggml.*``
  (tokens, token types, merges, special token ids, the chat template).

``--quantize`` picks the type of the 2-D weights; 1-D tensors (the RMSNorm weights) stay float32, as llama.cpp
keeps them, and a weight whose rows do not split into the type's 32-value blocks falls back to float16:

* ``f32``: lossless; ``f16``: half precision;
* ``q8_0``: blocks of 32 int8 values with one float16 scale (8.5 bits per weight);
* ``q4_0``: blocks of 32 4-bit values with one float16 scale (4.5 bits per weight), the token embedding
  included (llama-quantize would keep it at a higher type; this writer has only the block types above).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import DistilError
from distil.files import write_with_atomic

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")


class GgufExportError(DistilError):
    """A student cannot be written as GGUF."""

    default_hint = "GGUF export takes causal Llama-architecture students with a byte-level BPE tokenizer"


@dataclass(frozen=True)
class GgufFile:
    path: Path
    gguf_type: str
    size_bytes: int
    tensors: int


def _file_type(gguf_type: str) -> int:
    from gguf import LlamaFileType

    return {
        "f32": LlamaFileType.ALL_F32,
        "f16": LlamaFileType.MOSTLY_F16,
        "q8_0": LlamaFileType.MOSTLY_Q8_0,
        "q4_0": LlamaFileType.MOSTLY_Q4_0,
    }[gguf_type]


def rotary_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """``[n_head * head_dim, hidden]`` from Hugging Face's rotary layout (first half, second half of each head) to
    llama.cpp's (the two halves interleaved); readers undo it. ``n_head`` is the key-value head count for keys."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def encode_tensor(values: np.ndarray, gguf_type: str) -> tuple[np.ndarray, Any]:
    """(data, raw GGML type) of one float32 tensor written as ``gguf_type``, after llama.cpp's rules: 1-D stays
    float32, rows that do not split into 32-value blocks fall back to float16."""
    from gguf import GGMLQuantizationType, quants

    if values.ndim == 1 or gguf_type == "f32":
        return values.astype(np.float32), GGMLQuantizationType.F32
    block = {"q8_0": 32, "q4_0": 32}.get(gguf_type)
    if gguf_type == "f16" or (block and values.shape[-1] % block):
        return values.astype(np.float16), GGMLQuantizationType.F16
    qtype = GGMLQuantizationType.Q8_0 if gguf_type == "q8_0" else GGMLQuantizationType.Q4_0
    return quants.quantize(values.astype(np.float32), qtype), qtype


def _byte_level_pre(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level BPE tokenizer.json: ``smollm`` splits digits one by one
    before GPT-2's byte-level regex (SmolLM2's tokenizer), ``gpt2`` is that regex alone."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    raise GgufExportError(
        f"tokenizer.json: pre-tokenizer {kinds} has no llama.cpp name this writer knows (gpt2 or smollm)"
    )


def tokenizer_metadata(folder: Path, vocab_size: int) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` values of a byte-level BPE ``tokenizer.json`` in ``folder``: tokens by id (rows
    past the tokenizer's padded ``[PAD<i>]`` as llama.cpp pads them), their types, merges, special ids."""
    from gguf import TokenType
    from transformers import AutoTokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GgufExportError(f"{folder}: no tokenizer.json; GGUF export needs a fast (tokenizers) tokenizer")
    spec = json.loads(path.read_text())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise GgufExportError(f"{path}: a {model.get('type')} tokenizer; GGUF export writes byte-level BPE only")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id = {i: tok for tok, i in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size:
        raise GgufExportError(f"{folder}: the tokenizer has {len(by_id)} tokens, the model only {vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    specials = {
        name: getattr(tokenizer, f"{name}_token_id")
        for name in ("bos", "eos", "unk", "pad")
        if getattr(tokenizer, f"{name}_token_id") is not None
    }
    return {
        "pre": _byte_level_pre(spec),
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "specials": specials,
        "chat_template": getattr(tokenizer, "chat_template", None),
    }


def _check_llama(config: Any) -> None:
    if getattr(config, "model_type", None) != "llama":
        raise GgufExportError(
            f"the student is a {getattr(config, 'model_type', 'unknown')} model; GGUF export writes Llama-architecture "
            "students (SmolLM2 and its teacher-layers cuts are Llama)"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise GgufExportError("the student's attention or MLP has biases, which llama.cpp's Llama graph does not")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise GgufExportError(f"rope type {rope.get('rope_type')!r}: only plain rotary embeddings are written")


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def write_gguf(student_folder: Path, out_path: Path, gguf_type: str = "f32", name: str = "") -> GgufFile:
    """Write the causal Llama student in ``student_folder`` to ``out_path`` as ``gguf_type`` (see GGUF_TYPES)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    if gguf_type not in GGUF_TYPES:
        raise GgufExportError(f"--quantize {gguf_type!r}: GGUF takes one of {', '.join(GGUF_TYPES)}")
    model = AutoModelForCausalLM.from_pretrained(str(student_folder), dtype=torch.float32)
    config = model.config
    _check_llama(config)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    vocab = tokenizer_metadata(student_folder, config.vocab_size)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(name or student_folder.name)
        writer.add_file_type(_file_type(gguf_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocab["pre"])
        writer.add_token_list(vocab["tokens"])
        writer.add_token_types(vocab["types"])
        writer.add_token_merges(vocab["merges"])
        special_setters = {
            "bos": writer.add_bos_token_id,
            "eos": writer.add_eos_token_id,
            "unk": writer.add_unk_token_id,
            "pad": writer.add_pad_token_id,
        }
        for special, token_id in vocab["specials"].items():
            special_setters[special](token_id)
        writer.add_add_bos_token(False)  # the student was trained on prompts without a BOS token
        if vocab["chat_template"]:
            writer.add_chat_template(vocab["chat_template"])
        for hf_name, values in state.items():
            if hf_name == "lm_head.weight" and tied:
                continue  # tied: readers take the output projection from token_embd
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise GgufExportError(f"tensor {hf_name}: no llama.cpp name for it")
            if hf_name.endswith("q_proj.weight"):
                values = rotary_permute(values, n_head)
            elif hf_name.endswith("k_proj.weight"):
                values = rotary_permute(values, n_kv)
            data, raw_type = encode_tensor(values, gguf_type)
            writer.add_tensor(gguf_name, data, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    path = write_with_atomic(out_path, write)
    tensors = len(state) - (1 if tied and "lm_head.weight" in state else 0)
    return GgufFile(path, gguf_type, path.stat().st_size, tensors)
