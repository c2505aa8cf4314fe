"""Local Hugging Face folders and torch: what the transformers model (``ttc.adapters.hf``) and
the transformers PRMs (``ttc.scoring.prm_hf``) share. Importing it imports neither torch nor
transformers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from ttc.errors import ConfigError, MissingDependencyError
from ttc.validation import check_int

__all__ = ["Dtype", "check_settings", "model_folder", "require_hf", "torch_device"]

Dtype = Literal["auto", "bfloat16", "float16", "float32"]


def require_hf(purpose: str) -> None:
    """``MissingDependencyError`` naming the ``hf`` extra unless torch and transformers are
    installed."""
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(module, "hf", purpose)


def model_folder(path: str | Path, setting: str = "model_dir") -> Path:
    """``path`` as a local model folder (it has a ``config.json``); ttc never downloads."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{setting}: {str(folder)!r} is not a local Hugging Face model folder (no "
            "config.json); ttc never downloads models"
        )
    return folder


def check_settings(dtype: str, num_threads: int | None) -> None:
    """``ConfigError`` for a dtype or thread count transformers cannot take."""
    if dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ConfigError(f"dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
    check_int("num_threads", num_threads, ge=1, optional=True)


def torch_device(device: str | None, num_threads: int | None) -> Any:
    """The torch device to load on (``device``, else CUDA where available), after setting
    torch's thread count (process-wide) when one is given."""
    import torch

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
