"""PRMs trained from rollout labels (``ttc.labels``): the light head and TRL checkpoints.

``HiddenStatePRM`` is the light option that trains in minutes on a CPU: a logistic-regression
head on the frozen hidden state of a policy model at the end of each step. The hidden states
come from an ``Embedder``: ``LlamaCppEmbedder`` (a GGUF through llama.cpp, e.g. the embedded
Gemma) or ``TransformersEmbedder`` (a Hugging Face folder). One forward pass a solution gives
every step's state (the last token of each prefix). ``fit_hidden_state_prm`` trains it,
``save``/``load`` keep it in a folder (``prm.json``, the head and the embedder's settings).

``StepwisePRM`` loads a token-classification checkpoint trained on TRL's stepwise supervision
(``ttc train-prm``, TRL's ``PRMTrainer``): the prompt, then each step followed by the step
separator, scored softmax(logits)[1] at the separator's last token, as the trainer labelled it.
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ttc.errors import ConfigError
from ttc.scoring.prm import ProcessRewardModel
from ttc.scoring.prm_hf import Encoded, TransformersPRM
from ttc.validation import check_int

__all__ = [
    "L2_GRID",
    "PRM_CONFIG",
    "Embedder",
    "HiddenStatePRM",
    "LlamaCppEmbedder",
    "StepwisePRM",
    "TransformersEmbedder",
    "embedder_spec",
    "fit_hidden_state_prm",
    "fit_logistic",
    "head_from_features",
    "hidden_state_features",
    "load_embedder",
    "read_head",
    "select_l2",
]

#: The file in a trained PRM's folder that says how to score with it.
PRM_CONFIG = "ttc_prm.json"


# --------------------------------------------------------------------------------------------
# Hidden states at the end of each step


class Embedder(ABC):
    """Hidden states of a frozen model at the end of each step of a solution.

    ``max_tokens`` bounds the text a pass reads: a long prompt (a few-shot template) is cut
    from the left, so the question and the steps are what the state sees.
    """

    def __init__(self, max_tokens: int = 256) -> None:
        self.max_tokens = check_int("max_tokens", max_tokens, ge=8)
        self._lock = threading.Lock()

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """What ``load_embedder`` needs to build this embedder again."""

    @abstractmethod
    def _tokenize(self, text: str) -> list[int]: ...

    @abstractmethod
    def _states(self, rows: list[list[int]]) -> list[list[list[float]]]:
        """The last layer's state at every position of each row of token ids."""

    def step_states(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[list[float]]]:
        """One vector a step of each solution: the state at the step's last token."""
        rows: list[list[int]] = []
        positions: list[list[int]] = []
        with self._lock:
            for steps in solutions:
                ids: list[int] = list(self._tokenize(question))
                ends: list[int] = []
                for step in steps:
                    ids += self._tokenize(step)
                    ends.append(len(ids) - 1)
                cut = max(0, len(ids) - self.max_tokens)
                rows.append(ids[cut:])
                positions.append([max(0, e - cut) for e in ends])
            states = self._states(rows)
        return [[row[p] for p in ends] for row, ends in zip(states, positions)]


class TransformersEmbedder(Embedder):
    """Hidden states from a Hugging Face model folder (loaded once, on the CPU by default)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_tokens: int = 256,
        batch_size: int = 8,
        device: str | None = None,
    ) -> None:
        super().__init__(max_tokens)
        from ttc.hf_local import model_folder, require_hf

        require_hf("TransformersEmbedder")
        self.model_dir = model_folder(model_dir)
        self.batch_size = check_int("batch_size", batch_size, ge=1)
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    def spec(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            "model_dir": str(self.model_dir),
            "max_tokens": self.max_tokens,
        }

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        from ttc.hf_local import torch_device

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        model.to(torch_device(self.device, None))
        model.eval()
        self._model = model

    def _tokenize(self, text: str) -> list[int]:
        self._load()
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def _states(self, rows: list[list[int]]) -> list[list[list[float]]]:
        import torch

        self._load()
        model = self._model
        out: list[list[list[float]]] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = max(len(r) for r in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, r in enumerate(chunk):
                ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[b, : len(r)] = 1
            with torch.inference_mode():
                hidden = model(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
                ).last_hidden_state.float()
            for b, r in enumerate(chunk):
                out.append(hidden[b, : len(r)].cpu().tolist())
        return out


class LlamaCppEmbedder(Embedder):
    """Hidden states from a GGUF through llama.cpp (``None``: the embedded Gemma 3 270M):
    per-token embeddings (no pooling) of one pass a solution."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        max_tokens: int = 256,
        n_threads: int = 1,
    ) -> None:
        super().__init__(max_tokens)
        self.model_path = Path(model_path).expanduser() if model_path is not None else None
        if self.model_path is not None and not self.model_path.is_file():
            raise ConfigError(f"model_path: no such file {self.model_path}")
        self.n_threads = check_int("n_threads", n_threads, ge=1)
        self._llm: Any = None

    def spec(self) -> dict[str, Any]:
        return {
            "backend": "llama.cpp",
            "model_path": str(self.model_path) if self.model_path is not None else None,
            "max_tokens": self.max_tokens,
        }

    def _load(self) -> Any:
        if self._llm is None:
            try:
                import llama_cpp
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ConfigError(
                    "LlamaCppEmbedder needs llama-cpp-python: pip install 'ttc-sdk[local]'"
                ) from exc
            path = self.model_path
            if path is None:
                from ttc.adapters.gemma import gemma_path

                path = gemma_path()
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
                n_ctx=self.max_tokens + 8,
                n_batch=self.max_tokens + 8,
                n_ubatch=self.max_tokens + 8,
                n_threads=self.n_threads,
                verbose=False,
            )
        return self._llm

    def _tokenize(self, text: str) -> list[int]:
        ids: list[int] = self._load().tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return ids

    def _states(self, rows: list[list[int]]) -> list[list[list[float]]]:
        # One sequence a pass, as ``Llama.embed`` does it, but from token ids: ``embed``
        # tokenizes text itself, and the step ends must be positions of these very ids.
        import llama_cpp

        llm = self._load()
        width = llm.n_embd()
        out: list[list[list[float]]] = []
        for ids in rows:
            tokens = [llm.token_bos(), *ids]
            llm._batch.reset()
            llm._batch.add_sequence(tokens, 0, True)
            llm._ctx.kv_cache_clear()
            try:
                llm._ctx.decode(llm._batch)
            finally:
                llm._batch.reset()
            ptr = llama_cpp.llama_get_embeddings(llm._ctx.ctx)
            out.append([ptr[j * width : (j + 1) * width] for j in range(1, len(tokens))])
        llm._ctx.kv_cache_clear()
        return out


def load_embedder(spec: dict[str, Any], **options: Any) -> Embedder:
    """An embedder from its ``spec()``; ``options`` go to its class (``max_tokens`` replaces
    the saved one; ``n_threads`` for llama.cpp, ``batch_size`` and ``device`` for
    transformers)."""
    backend = spec.get("backend")
    options.setdefault("max_tokens", int(spec.get("max_tokens", 256)))
    if backend == "transformers":
        return TransformersEmbedder(spec["model_dir"], **options)
    if backend == "llama.cpp":
        return LlamaCppEmbedder(spec.get("model_path"), **options)
    raise ConfigError(f"embedder backend must be transformers or llama.cpp, got {backend!r}")


def embedder_spec(name: str) -> dict[str, Any]:
    """The embedder ``ttc train-prm --embedder`` names, as a ``spec()``: ``"embedded"`` (Gemma
    3 270M through llama.cpp), a ``.gguf`` file, or a Hugging Face folder."""
    if name == "embedded":
        return {"backend": "llama.cpp", "model_path": None}
    if name.endswith(".gguf"):
        return {"backend": "llama.cpp", "model_path": name}
    return {"backend": "transformers", "model_dir": name}


def read_head(folder: str | Path) -> dict[str, Any]:
    """A saved head's settings (``folder/ttc_prm.json``), checked without loading a model:
    ``ConfigError`` for a folder that holds no hidden-state PRM."""
    path = Path(folder).expanduser() / PRM_CONFIG
    if not path.is_file():
        raise ConfigError(f"no trained PRM at {folder} (expected {path})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "hidden-state":
        found = data.get("format") if isinstance(data, dict) else None
        raise ConfigError(f"{path} is not a hidden-state PRM (format {found!r})")
    if not isinstance(data.get("embedder"), dict):
        raise ConfigError(f"{path} names no embedder")
    return data


# --------------------------------------------------------------------------------------------
# The head


def fit_logistic(
    features: Sequence[Sequence[float]],
    labels: Sequence[bool],
    *,
    l2: float = 1.0,
    iterations: int = 25,
) -> tuple[list[float], float, list[float], list[float]]:
    """Logistic regression by Newton's method on standardized features, with an L2 penalty
    ``l2`` on the weights: ``(weights, bias, mean, scale)``; a feature vector ``x`` scores
    ``sigmoid(((x - mean) / scale) . weights + bias)``."""
    import numpy as np

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"need one label a feature row, got {len(x)} rows, {len(y)} labels")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], float(l2))
    penalty[-1] = 0.0  # the bias is not penalized
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return [float(v) for v in w[:-1]], float(w[-1]), mean.tolist(), scale.tolist()


class HiddenStatePRM(ProcessRewardModel):
    """A logistic-regression head on a frozen model's hidden state at each step's end.

    Args:
        embedder: where the hidden states come from.
        weights: the head's weights (``fit_logistic``'s output, as are the next three).
        bias: the head's bias.
        mean: the feature means the states are centred by.
        scale: the feature scales they are divided by.
        name: the key of this PRM's score in ``Candidate.scores``.
        cache_size: step scores remembered (0: no cache).
    """

    name = "hidden_state_prm"

    def __init__(
        self,
        embedder: Embedder,
        weights: Sequence[float],
        bias: float,
        mean: Sequence[float],
        scale: Sequence[float],
        *,
        name: str | None = None,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if not len(weights) == len(mean) == len(scale):
            raise ConfigError("weights, mean and scale must have the same length")
        self.embedder = embedder
        self.weights = [float(v) for v in weights]
        self.bias = float(bias)
        self.mean = [float(v) for v in mean]
        self.scale = [float(v) for v in scale]
        if name is not None:
            self.name = name

    def score_states(self, states: Sequence[Sequence[float]]) -> list[float]:
        """The head's probability that each state's step is good."""
        out = []
        for state in states:
            if len(state) != len(self.weights):
                raise ConfigError(
                    f"the embedder gives {len(state)} features; the head was trained on "
                    f"{len(self.weights)}"
                )
            z = self.bias + sum(
                w * (x - m) / s for w, x, m, s in zip(self.weights, state, self.mean, self.scale)
            )
            out.append(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))))
        return out

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        states = await anyio.to_thread.run_sync(
            self.embedder.step_states, question, [list(s) for s in solutions]
        )
        return [self.score_states(rows) for rows in states]

    def save(self, folder: str | Path) -> Path:
        """Write the head and the embedder's settings to ``folder/ttc_prm.json``."""
        target = Path(folder).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        data = {
            "format": "hidden-state",
            "embedder": self.embedder.spec(),
            "weights": self.weights,
            "bias": self.bias,
            "mean": self.mean,
            "scale": self.scale,
        }
        (target / PRM_CONFIG).write_text(json.dumps(data), encoding="utf-8")
        return target

    @classmethod
    def load(cls, folder: str | Path, *, embedder: Embedder | None = None) -> HiddenStatePRM:
        """A saved head; ``embedder`` replaces the saved one (e.g. one already loaded)."""
        data = read_head(folder)
        return cls(
            embedder or load_embedder(data["embedder"]),
            data["weights"],
            data["bias"],
            data["mean"],
            data["scale"],
        )

    def __repr__(self) -> str:
        return f"HiddenStatePRM({self.embedder.spec()!r})"


def hidden_state_features(
    questions: Sequence[Any],
    embedder: Embedder,
    *,
    soft_threshold: float | None = None,
) -> tuple[list[list[float]], list[bool], list[int]]:
    """Each labelled step's state (the question as the model was prompted, the steps as
    generated) and its hard label (or ``soft >= soft_threshold``), with the index of the
    question it came from (for splits and intervals by question). Steps after a solution's
    first unlabelled one are left out. One embedder pass a solution: the costly part of
    training, so callers that fit several heads (or score the training steps) reuse these."""
    features: list[list[float]] = []
    labels: list[bool] = []
    owners: list[int] = []
    for index, q in enumerate(questions):
        solutions: list[list[str]] = []
        targets: list[list[bool]] = []
        for solution in q.solutions:
            steps, marks = [], []
            for step in solution.steps:
                if step.hard is None:
                    break
                good = step.hard
                if soft_threshold is not None and step.soft is not None:
                    good = step.soft >= soft_threshold
                steps.append(step.text)
                marks.append(bool(good))
            if steps:
                solutions.append(steps)
                targets.append(marks)
        if not solutions:
            continue
        for states, marks in zip(embedder.step_states(q.prompt, solutions), targets):
            features.extend(states)
            labels.extend(marks)
            owners.extend([index] * len(marks))
    return features, labels, owners


def head_from_features(
    features: Sequence[Sequence[float]],
    labels: Sequence[bool],
    embedder: Embedder,
    *,
    l2: float = 1.0,
) -> HiddenStatePRM:
    """A head fitted on ``hidden_state_features``' output, scoring with ``embedder``."""
    if not labels:
        raise ConfigError("no labelled steps to train on")
    if len(set(labels)) < 2:
        raise ConfigError(
            f"every labelled step is {'good' if labels[0] else 'bad'}: a head needs both"
        )
    weights, bias, mean, scale = fit_logistic(features, labels, l2=l2)
    return HiddenStatePRM(embedder, weights, bias, mean, scale)


L2_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
"""The L2 penalties ``select_l2`` tries: a head has one weight per hidden dimension (640 on
Gemma 3 270M), so with a few hundred labelled steps a weak penalty fits the training steps
perfectly and ranks new ones little better than chance."""


def select_l2(
    features: Sequence[Sequence[float]],
    labels: Sequence[bool],
    owners: Sequence[int],
    *,
    grid: Sequence[float] = L2_GRID,
    folds: int = 5,
) -> tuple[float, dict[float, float | None]]:
    """The L2 penalty with the best mean step AUC over ``folds`` folds of whole questions
    (``owners``: each step's question; steps of one question are never split between
    training and validation), and each penalty's mean AUC (``None`` where no fold could be
    scored). Ties go to the larger penalty. Refuses fewer than two questions."""
    import numpy as np

    from ttc.labels.stats import roc_auc

    if not grid or any(v < 0 for v in grid):
        raise ConfigError(f"grid: L2 penalties must be >= 0, got {list(grid)!r}")
    questions = sorted(set(owners))
    k = min(check_int("folds", folds, ge=2), len(questions))
    if k < 2:
        raise ConfigError("choosing the L2 penalty needs labelled steps of two questions or more")
    fold_of = {q: i % k for i, q in enumerate(questions)}
    means: dict[float, float | None] = {}
    for l2 in grid:
        scores: list[float] = []
        for fold in range(k):
            train = [i for i, o in enumerate(owners) if fold_of[o] != fold]
            held = [i for i, o in enumerate(owners) if fold_of[o] == fold]
            y_train = [labels[i] for i in train]
            if len(set(y_train)) < 2:
                continue
            weights, bias, mean, scale = fit_logistic([features[i] for i in train], y_train, l2=l2)
            # The head's logit ranks the held-out steps as its score does.
            x = np.asarray([features[i] for i in held], dtype=np.float64)
            logits = ((x - np.asarray(mean)) / np.asarray(scale)) @ np.asarray(weights) + bias
            value = roc_auc(logits.tolist(), [labels[i] for i in held])
            if value is not None:
                scores.append(value)
        means[l2] = sum(scores) / len(scores) if scores else None
    scored = [(v, l2) for l2, v in means.items() if v is not None]
    if not scored:
        raise ConfigError("no fold has both good and bad steps to choose the L2 penalty on")
    best = max(scored)[0]
    return max(l2 for v, l2 in scored if v == best), means


def fit_hidden_state_prm(
    questions: Sequence[Any],
    embedder: Embedder,
    *,
    l2: float = 1.0,
    soft_threshold: float | None = None,
) -> HiddenStatePRM:
    """Train the head on labelled questions (``ttc.labels.LabelledQuestion``): each labelled
    step's state against its label (``hidden_state_features``)."""
    features, labels, _ = hidden_state_features(questions, embedder, soft_threshold=soft_threshold)
    return head_from_features(features, labels, embedder, l2=l2)


# --------------------------------------------------------------------------------------------
# TRL PRMTrainer checkpoints


class StepwisePRM(TransformersPRM):
    """A token-classification PRM trained on TRL's stepwise supervision (``ttc train-prm``).

    The input is written as TRL's ``PRMTrainer`` wrote it when training: the BOS token, the
    prompt, then every step followed by ``step_separator``; a step scores softmax(logits)[1]
    at the last token of its separator. The separator is read from the folder's
    ``ttc_prm.json`` when ``ttc train-prm`` wrote one (default ``"\\n"``, TRL's).

    Args:
        model_dir: the checkpoint folder.
        step_separator: overrides the folder's separator.
        **options: ``TransformersPRM``'s (batch_size, dtype, device...).
    """

    name = "stepwise_prm"

    def __init__(
        self, model_dir: str | Path, *, step_separator: str | None = None, **options: Any
    ) -> None:
        super().__init__(model_dir, **options)
        if step_separator is None:
            config = self.model_dir / PRM_CONFIG
            saved = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
            step_separator = str(saved.get("step_separator", "\n"))
        if not step_separator:
            raise ConfigError("step_separator must not be empty")
        self.step_separator = step_separator
        self._separator_ids: list[int] = []

    def _auto_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def _prepare(self, tokenizer: Any) -> None:
        self._separator_ids = tokenizer.encode(self.step_separator, add_special_tokens=False)
        if not self._separator_ids:
            raise ConfigError(f"step_separator: {self.step_separator!r} encodes to no tokens")

    def _encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        ids: list[int] = tokenizer.encode(question.strip(), add_special_tokens=False)
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        positions = []
        for step in steps:
            text = step.strip()
            ids += tokenizer.encode(text, add_special_tokens=False) + self._separator_ids
            positions.append(len(ids) - 1)
        return Encoded(ids, positions)

    def _probabilities(self, logits: Any) -> Any:
        if logits.shape[-1] != 2:
            raise ConfigError(
                f"model_dir: StepwisePRM needs a 2-label token-classification head, this one "
                f"has {logits.shape[-1]} labels"
            )
        return logits.softmax(dim=-1)[:, 1]
