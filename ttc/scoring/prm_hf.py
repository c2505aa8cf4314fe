"""Process reward models run in this process with transformers, from local folders.

Three input formats (see ``shared/REFERENCE.md``), one mechanism: each partial solution is
rendered into one token sequence in which certain positions stand for its steps; many solutions
go through the model in one padded forward pass (with attention masks and position ids, so
padding changes nothing), and each step's score is read at its position:

- ``MathShepherdPRM``: a causal LM; ``question + " " + steps``, every step ending in the step
  tag (``" ки"``), steps joined by ``"\\n"``; at every tag, softmax over the ``+``/``-`` logits
  only, the score is P(``+``).
- ``RLHFlowPRM``: a causal LM read as a chat; each step is a user turn (the first prefixed by
  the question) answered by an assistant ``"+"``; the score is P(``+``) against ``-`` at the
  position that predicts each assistant ``"+"``.
- ``QwenPRM``: a token-classification head (2 labels); the assistant message is the steps
  joined by ``<extra_0>`` with a trailing one; the score is softmax(logits)[1] at each
  ``<extra_0>``.

Token ids are derived from the tokenizer when the model loads (never hard-coded), and a
tokenizer that cannot express the format (a tag that is not one token, no chat template, no
separator token) is refused with ``ConfigError``. Models load lazily, in a worker thread, and
are never downloaded (``local_files_only=True``); scoring runs in a worker thread under a lock,
so the event loop never blocks and one forward pass runs at a time. Importing this module
imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from ttc.errors import ConfigError, ContextLengthError, ProviderError
from ttc.hf_local import Dtype, check_settings, model_folder, require_hf, torch_device
from ttc.runtime.loader import EngineLoader
from ttc.scoring.prm import ProcessRewardModel
from ttc.validation import check_int

__all__ = [
    "Encoded",
    "MathShepherdPRM",
    "QwenPRM",
    "QwenPRMHead",
    "RLHFlowPRM",
    "TransformersPRM",
    "qwen_prm_messages",
]

logger = logging.getLogger("ttc.prm_hf")

PaddingSide = Literal["left", "right"]

_P = TypeVar("_P", bound="TransformersPRM")

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Encoded:
    """One partial solution as the model sees it: its token ids and, per step, the position
    whose logits score that step."""

    ids: list[int]
    positions: list[int]


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: Any
    pad_id: int
    max_positions: int | None


def _single_token(tokenizer: Any, text: str, what: str) -> int:
    """The one token id ``text`` encodes to (no special tokens), or a ``ConfigError``."""
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(
            f"{what}: {text!r} is not a single token in the tokenizer "
            f"{_tokenizer_name(tokenizer)} (it encodes to {ids})"
        )
    return ids[0]


def _tokenizer_name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def _clean(step: str, *remove: str) -> str:
    """A step's text without surrounding whitespace (the delimiter) or marker text, which would
    add a scoring position the step does not own."""
    for marker in remove:
        if marker:
            step = step.replace(marker, "")
    return step.strip()


class TransformersPRM(ProcessRewardModel):
    """The shared machinery: lazy local loading, batched padded forward passes in a worker
    thread under a lock. Subclasses say how a solution is encoded and how logits become scores.

    Args:
        model_dir: the model folder (``config.json``, weights, tokenizer); never downloaded.
        batch_size: solutions per forward pass (sorted by length first, to pad little).
        padding_side: where padding goes; scores do not depend on it (position ids are
            computed from the attention mask).
        dtype: weights' dtype; ``"auto"`` follows the checkpoint.
        device: ``"cpu"``, ``"cuda"``...; default CUDA where available.
        num_threads: ``torch.set_num_threads`` at load (process-wide); ``None`` leaves torch's.
        name: the key of this PRM's score in ``Candidate.scores``.
        cache_size: step scores remembered by the base class (0: no cache).
    """

    name = "prm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 8,
        padding_side: PaddingSide = "right",
        dtype: Dtype = "auto",
        device: str | None = None,
        num_threads: int | None = None,
        name: str | None = None,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(cache_size=cache_size)
        require_hf(type(self).__name__)
        self.model_dir = model_folder(model_dir)
        check_int("batch_size", batch_size, ge=1)
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        check_settings(dtype, num_threads)
        self.batch_size = batch_size
        self.padding_side: PaddingSide = padding_side
        self.dtype: Dtype = dtype
        self.device = device
        self.num_threads = num_threads
        if name is not None:
            self.name = name
        #: Forward passes run so far (one per batch): shows that solutions were batched.
        self.forward_passes = 0
        self._engine = EngineLoader[_Loaded](name=f"PRM {self.model_dir}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.model_dir)!r})"

    # ------------------------------------------------------------------ loading

    async def start(self) -> None:
        """Load the model now rather than on the first scoring call."""
        await self._engine.aget(self._load_now)

    def load(self: _P) -> _P:
        """``start`` for synchronous code (scripts, fixtures); returns the PRM."""
        self._engine.get(self._load_now)
        return self

    def close(self) -> None:
        """Drop the model (a later call loads it again); waits for a pass in progress."""
        self._engine.close()

    @property
    def load_seconds(self) -> float | None:
        """How long loading took (``None`` until loaded)."""
        return self._engine.seconds

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (``None`` until loaded)."""
        loaded = self._engine.value
        return loaded.tokenizer if loaded is not None else None

    def _auto_class(self) -> Any:
        """The transformers Auto class the checkpoint loads through."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def _load_now(self) -> _Loaded:
        import torch
        from transformers import AutoTokenizer

        device = torch_device(self.device, self.num_threads)
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(
                str(self.model_dir), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model_dir: transformers cannot load the tokenizer: {exc}") from exc
        self._prepare(tokenizer)  # ConfigError before paying for the weights
        auto = self._auto_class()
        try:
            model: Any
            model, info = auto.from_pretrained(
                str(self.model_dir),
                local_files_only=True,
                dtype="auto" if self.dtype == "auto" else getattr(torch, self.dtype),
                output_loading_info=True,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model_dir: transformers cannot load the model: {exc}") from exc
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            # transformers would fill them with random values: scores that look real but are
            # noise (e.g. a causal LM's folder read as a classifier, or a checkpoint whose
            # head only its own remote code defines)
            shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
            raise ConfigError(
                f"model_dir: the checkpoint has no weights for {shown} of "
                f"{type(model).__name__} ({auto.__name__}); its scores would be random"
            )
        model.to(device)
        model.eval()
        pad = tokenizer.pad_token_id
        if not isinstance(pad, int):
            pad = tokenizer.eos_token_id if isinstance(tokenizer.eos_token_id, int) else 0
        limit = getattr(model.config, "max_position_embeddings", None)
        return _Loaded(model, tokenizer, device, pad, limit if isinstance(limit, int) else None)

    @abstractmethod
    def _prepare(self, tokenizer: Any) -> None:
        """Derive the token ids the format needs from the tokenizer; ``ConfigError`` if the
        tokenizer cannot express the format."""

    # ------------------------------------------------------------------ encoding and scoring

    @abstractmethod
    def _encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        """One solution's token ids and its steps' scoring positions."""

    @abstractmethod
    def _probabilities(self, logits: Any) -> Any:
        """Step scores (a 1-D float tensor) from the logits at the steps' positions."""

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        """What the model sees for one solution (loads the model if needed): for inspection and
        tests."""
        loaded = self._engine.get(self._load_now)
        with self._engine.run_lock:
            return self._checked(loaded, question, steps)

    def _checked(self, loaded: _Loaded, question: str, steps: Sequence[str]) -> Encoded:
        encoded = self._encode(loaded.tokenizer, question, steps)
        if len(encoded.positions) != len(steps):
            raise ValueError(
                f"{type(self).__name__}: found {len(encoded.positions)} scoring positions for "
                f"{len(steps)} steps; the tokenizer merged or split a marker"
            )
        if loaded.max_positions is not None and len(encoded.ids) > loaded.max_positions:
            raise ContextLengthError(
                f"a solution of {len(encoded.ids)} tokens exceeds the PRM's "
                f"{loaded.max_positions} positions",
                provider="transformers",
                model=self.model_dir.name,
            )
        return encoded

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        batch = [list(steps) for steps in solutions]
        await self._engine.aget(self._load_now)
        return await anyio.to_thread.run_sync(self._score_sync, question, batch)

    def _score_sync(self, question: str, solutions: list[list[str]]) -> list[list[float]]:
        """Every solution's step scores, ``batch_size`` solutions per forward pass (in a worker
        thread, holding the run lock)."""
        loaded = self._engine.get(self._load_now)
        # the tokenizer under the lock too: a fast tokenizer used from two threads at once can
        # fail ("Already borrowed")
        with self._engine.run_lock:
            encoded = [self._checked(loaded, question, steps) for steps in solutions]
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
            out: list[list[float]] = [[] for _ in encoded]
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                try:
                    scores = self._forward(loaded, [encoded[i] for i in chunk])
                except RuntimeError as exc:  # torch's errors: out of memory, bad shapes...
                    raise ProviderError(
                        f"{type(exc).__name__}: {exc}",
                        provider="transformers",
                        model=self.model_dir.name,
                    ) from exc
                for i, row in zip(chunk, scores):
                    out[i] = row
        return out

    def _forward(self, loaded: _Loaded, rows: list[Encoded]) -> list[list[float]]:
        """One padded forward pass; each row's scores read at its (shifted) positions."""
        import torch

        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), loaded.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        shifts = []
        for b, r in enumerate(rows):
            shift = width - len(r.ids) if self.padding_side == "left" else 0
            ids[b, shift : shift + len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
            mask[b, shift : shift + len(r.ids)] = 1
            shifts.append(shift)
        # positions count real tokens only, so left padding does not move them
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = loaded.model(
                input_ids=ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                position_ids=position_ids.to(loaded.device),
            ).logits
            self.forward_passes += 1
            result = []
            for b, r in enumerate(rows):
                at = torch.tensor([p + shifts[b] for p in r.positions], device=logits.device)
                probs = self._probabilities(logits[b, at].float())
                result.append([float(v) for v in probs.tolist()])
        return result


QWEN_PRM_ARCHITECTURE = "Qwen2ForProcessRewardModel"


def qwen_prm_messages(
    question: str, steps: Sequence[str], *, separator: str = "<extra_0>", system: str = QWEN_SYSTEM
) -> list[dict[str, str]]:
    """The chat a Qwen2.5-Math-PRM scores: the system prompt, the question as the user turn,
    and the steps (whitespace and stray separators removed) each followed by ``separator``."""
    body = "".join(_clean(step, separator) + separator for step in steps)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": body},
    ]


def _architectures(folder: Path) -> list[str]:
    """The ``architectures`` a model folder's config names (empty if unreadable)."""
    try:
        names = json.loads((folder / "config.json").read_text()).get("architectures")
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


class QwenPRMHead:
    """Loads Qwen2.5-Math-PRM checkpoints (``Qwen2ForProcessRewardModel``) without their
    remote code: transformers' ``Qwen2Model`` for the decoder (``model.*``) and the checkpoint's
    head, ``score`` = Linear(hidden, hidden), ReLU, Linear(hidden, num_labels), read from its
    safetensors. Called like a transformers Auto class; the model returns ``.logits``."""

    __name__ = "QwenPRMHead"

    @staticmethod
    def from_pretrained(
        path: str, *, dtype: Any = "auto", output_loading_info: bool = False, **kwargs: Any
    ) -> Any:
        import torch
        from transformers import Qwen2Model
        from transformers.modeling_outputs import TokenClassifierOutput
        from transformers.utils import logging as hf_logging

        # quiet: the decoder's load report would call the head's weights "unexpected"; they
        # are read below
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        try:
            loaded: Any = Qwen2Model.from_pretrained(
                path, dtype=dtype, output_loading_info=True, **kwargs
            )
        finally:
            hf_logging.set_verbosity(level)
        decoder, info = loaded
        config = decoder.config
        labels = int(getattr(config, "num_labels", 2) or 2)
        head = torch.nn.Sequential(
            torch.nn.Linear(config.hidden_size, config.hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_size, labels),
        ).to(decoder.dtype)
        state = _read_tensors(Path(path), prefix="score.")
        missing = [f"score.{k}" for k in head.state_dict() if k not in state]
        if not missing:
            head.load_state_dict({k: v.to(decoder.dtype) for k, v in state.items()})

        class _PRM(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = decoder
                self.score = head
                self.config = config

            def forward(self, **inputs: Any) -> Any:
                hidden = self.model(**inputs).last_hidden_state
                return TokenClassifierOutput(logits=self.score(hidden))

        model = _PRM()
        loading = {"missing_keys": list(info.get("missing_keys") or ()) + missing}
        return (model, loading) if output_loading_info else model


def _read_tensors(folder: Path, *, prefix: str) -> dict[str, Any]:
    """The tensors named ``prefix...`` in a folder's safetensors files, ``prefix`` dropped."""
    from safetensors import safe_open

    out: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = f.get_tensor(key)
    return out


def _plus_minus(logits: Any, good_id: int, bad_id: int) -> Any:
    """P(good) in a softmax over the good and bad tokens' logits only."""
    return logits[:, [good_id, bad_id]].softmax(dim=-1)[:, 0]


class MathShepherdPRM(TransformersPRM):
    """Math-Shepherd (``peiyi9979/math-shepherd-mistral-7b-prm``) and PRMs trained like it.

    A causal LM that reads ``question + " " + steps``, every step ending in ``step_tag`` and
    steps joined by ``"\\n"``; each step scores P(``good_token``) in a softmax over the good and
    bad tokens' logits at its tag. The ids come from the tokenizer at load: the tag is encoded
    after a word (``" ки"`` after a newline is another token) and must be one token.

    Args:
        model_dir: the model folder.
        step_tag: the text ending every step (``" ки"``).
        good_token: the label token of a correct step (``"+"``).
        bad_token: the label token of a wrong step (``"-"``).
        **options: ``TransformersPRM``'s (batch_size, padding_side, dtype, device...).
    """

    name = "math_shepherd"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        step_tag: str = " ки",
        good_token: str = "+",
        bad_token: str = "-",
        **options: Any,
    ) -> None:
        if not step_tag.strip():
            raise ConfigError("step_tag must not be empty or blank")
        super().__init__(model_dir, **options)
        self.step_tag = step_tag
        self.good_token = good_token
        self.bad_token = bad_token
        self.step_tag_id: int | None = None
        self.good_id: int | None = None
        self.bad_id: int | None = None

    def _prepare(self, tokenizer: Any) -> None:
        probe = "1"
        before: list[int] = tokenizer.encode(probe, add_special_tokens=False)
        after: list[int] = tokenizer.encode(probe + self.step_tag, add_special_tokens=False)
        tail = after[len(before) :] if after[: len(before)] == before else after
        if len(tail) != 1:
            raise ConfigError(
                f"step_tag: {self.step_tag!r} after a word is not a single token in the "
                f"tokenizer {_tokenizer_name(tokenizer)} (it encodes to {tail}); pass the tag "
                "this PRM was trained with"
            )
        self.step_tag_id = tail[0]
        self.good_id = _single_token(tokenizer, self.good_token, "good_token")
        self.bad_id = _single_token(tokenizer, self.bad_token, "bad_token")
        if self.good_id == self.bad_id:
            raise ConfigError("good_token and bad_token encode to the same token")

    def text(self, question: str, steps: Sequence[str]) -> str:
        """The input text: ``question + " " + step1 tag + "\\n" + step2 tag ...``."""
        marker = self.step_tag.strip()
        body = "\n".join(_clean(step, marker) + self.step_tag for step in steps)
        return f"{question.strip()} {body}"

    def _encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        ids: list[int] = tokenizer.encode(self.text(question, steps))
        return Encoded(ids, [i for i, t in enumerate(ids) if t == self.step_tag_id])

    def _probabilities(self, logits: Any) -> Any:
        assert self.good_id is not None and self.bad_id is not None
        return _plus_minus(logits, self.good_id, self.bad_id)


class RLHFlowPRM(TransformersPRM):
    """RLHFlow's chat PRMs (``Llama3.1-8B-PRM-Deepseek-Data`` / ``-Mistral-Data``).

    The solution is a chat: the first user turn is ``question + " " + step1``, every further
    step its own user turn, each answered by an assistant ``good_token``. A step scores
    P(``good_token``) against ``bad_token`` at the position that predicts its assistant answer;
    all steps are read from one pass over the whole chat (a causal LM does not look ahead).
    Needs the tokenizer's chat template (``ConfigError`` without one).

    Args:
        model_dir: the model folder.
        good_token: the label token of a correct step (``"+"``).
        bad_token: the label token of a wrong step (``"-"``).
        **options: ``TransformersPRM``'s.
    """

    name = "rlhflow_prm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        good_token: str = "+",
        bad_token: str = "-",
        **options: Any,
    ) -> None:
        super().__init__(model_dir, **options)
        self.good_token = good_token
        self.bad_token = bad_token
        self.good_id: int | None = None
        self.bad_id: int | None = None

    def _prepare(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"model_dir: the tokenizer {_tokenizer_name(tokenizer)} has no chat template; "
                "RLHFlowPRM reads steps as chat turns"
            )
        self.good_id = _single_token(tokenizer, self.good_token, "good_token")
        self.bad_id = _single_token(tokenizer, self.bad_token, "bad_token")
        if self.good_id == self.bad_id:
            raise ConfigError("good_token and bad_token encode to the same token")

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """The chat: each step a user turn (the first with the question), each answered by
        an assistant ``good_token``."""
        chat: list[dict[str, str]] = []
        for k, step in enumerate(steps):
            text = f"{question.strip()} {_clean(step)}" if k == 0 else _clean(step)
            chat.append({"role": "user", "content": text})
            chat.append({"role": "assistant", "content": self.good_token})
        return chat

    def _encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        chat = self.messages(question, steps)
        full: str = tokenizer.apply_chat_template(chat, tokenize=False)
        ids: list[int] = tokenizer.encode(full, add_special_tokens=False)
        positions = []
        for k in range(len(steps)):
            # the chat up to this step's user turn, ready for the assistant: its next token
            # is the assistant's answer, so its last position predicts it
            prefix: str = tokenizer.apply_chat_template(
                chat[: 2 * k + 1], tokenize=False, add_generation_prompt=True
            )
            n = len(tokenizer.encode(prefix, add_special_tokens=False))
            if not full.startswith(prefix) or n >= len(ids) or ids[n] != self.good_id:
                raise ConfigError(
                    f"model_dir: cannot find the assistant {self.good_token!r} of step {k + 1} "
                    f"in the chat template's rendering ({_tokenizer_name(tokenizer)})"
                )
            positions.append(n - 1)
        return Encoded(ids, positions)

    def _probabilities(self, logits: Any) -> Any:
        assert self.good_id is not None and self.bad_id is not None
        return _plus_minus(logits, self.good_id, self.bad_id)


class QwenPRM(TransformersPRM):
    """Qwen2.5-Math-PRM-style token-classification PRMs (2 labels).

    The chat is the system prompt, the question as the user turn, and an assistant message of
    the steps joined by ``separator`` with a trailing one; a step scores softmax(logits)[1] at
    its separator. Needs a chat template and the separator as one token of the tokenizer
    (``ConfigError`` otherwise). The released checkpoints (config architecture
    ``Qwen2ForProcessRewardModel``, e.g. ``Qwen/Qwen2.5-Math-PRM-7B``) load without their
    remote code through ``QwenPRMHead``; other folders through
    ``AutoModelForTokenClassification``.

    Args:
        model_dir: the model folder.
        separator: the step separator token (``"<extra_0>"``).
        system: the system prompt.
        **options: ``TransformersPRM``'s.
    """

    name = "qwen_prm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        separator: str = "<extra_0>",
        system: str = QWEN_SYSTEM,
        **options: Any,
    ) -> None:
        super().__init__(model_dir, **options)
        self.separator = separator
        self.system = system
        self.separator_id: int | None = None

    def _auto_class(self) -> Any:
        if QWEN_PRM_ARCHITECTURE in _architectures(self.model_dir):
            return QwenPRMHead  # the released checkpoints: a head transformers has no class for
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def _prepare(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"model_dir: the tokenizer {_tokenizer_name(tokenizer)} has no chat template; "
                "QwenPRM writes the solution as an assistant message"
            )
        vocab: dict[str, int] = tokenizer.get_vocab()
        if self.separator not in vocab:
            raise ConfigError(
                f"separator: {self.separator!r} is not a token of the tokenizer "
                f"{_tokenizer_name(tokenizer)}"
            )
        self.separator_id = _single_token(tokenizer, self.separator, "separator")

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """System prompt, the question, and the steps each followed by the separator."""
        return qwen_prm_messages(question, steps, separator=self.separator, system=self.system)

    def _encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        text: str = tokenizer.apply_chat_template(self.messages(question, steps), tokenize=False)
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
        return Encoded(ids, [i for i, t in enumerate(ids) if t == self.separator_id])

    def _probabilities(self, logits: Any) -> Any:
        if logits.shape[-1] != 2:
            raise ConfigError(
                f"model_dir: QwenPRM needs a 2-label token-classification head, this one has "
                f"{logits.shape[-1]} labels"
            )
        return logits.softmax(dim=-1)[:, 1]
