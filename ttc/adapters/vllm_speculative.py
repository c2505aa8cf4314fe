"""Speculative decoding options for the in-process vLLM engine (vLLM's ``speculative_config``),
checked before anything loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ttc.errors import ConfigError

__all__ = ["Speculative", "SpeculativeMethod"]

SpeculativeMethod = Literal["ngram", "draft_model", "eagle", "eagle3"]


class Speculative(BaseModel):
    """Speculative decoding for ``VLLM`` (vLLM's ``speculative_config``).

    Build one with a constructor that asks for exactly what its method needs:
    ``Speculative.ngram()`` (prompt lookup: drafts copied from the prompt; no second model; pays
    off when the answer repeats the prompt, e.g. code edits or quoting), ``Speculative.draft_model
    (path)`` (a small model of the same tokenizer drafts) or ``Speculative.eagle(path)`` (an
    EAGLE head trained for the target model). Outputs follow the target model's distribution;
    only the speed changes, and on a CPU a speedup is not guaranteed: measure it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: SpeculativeMethod
    num_speculative_tokens: int = Field(4, ge=1, le=64, description="Draft tokens per step.")
    model: str | None = Field(None, description="Draft model or EAGLE head folder.")
    prompt_lookup_min: int | None = Field(None, ge=1, description="ngram: shortest match.")
    prompt_lookup_max: int | None = Field(None, ge=1, description="ngram: longest match.")
    draft_tensor_parallel_size: int | None = Field(None, ge=1)

    @classmethod
    def ngram(
        cls,
        num_speculative_tokens: int = 4,
        *,
        prompt_lookup_min: int = 2,
        prompt_lookup_max: int = 4,
    ) -> Speculative:
        """Prompt-lookup drafting: propose the tokens that followed the last ``prompt_lookup_min``
        to ``prompt_lookup_max`` tokens where they occur earlier in the prompt."""
        return cls.checked(
            method="ngram",
            num_speculative_tokens=num_speculative_tokens,
            prompt_lookup_min=prompt_lookup_min,
            prompt_lookup_max=prompt_lookup_max,
        )

    @classmethod
    def draft_model(
        cls,
        model: str | Path,
        num_speculative_tokens: int = 4,
        *,
        draft_tensor_parallel_size: int | None = None,
    ) -> Speculative:
        """A smaller model (a local folder, same tokenizer) drafts for the target model."""
        return cls.checked(
            method="draft_model",
            model=str(model),
            num_speculative_tokens=num_speculative_tokens,
            draft_tensor_parallel_size=draft_tensor_parallel_size,
        )

    @classmethod
    def eagle(
        cls, model: str | Path, num_speculative_tokens: int = 4, *, eagle3: bool = False
    ) -> Speculative:
        """An EAGLE (or EAGLE-3) head for the target model, from a local folder."""
        return cls.checked(
            method="eagle3" if eagle3 else "eagle",
            model=str(model),
            num_speculative_tokens=num_speculative_tokens,
        )

    @classmethod
    def checked(cls, **fields: Any) -> Speculative:
        """Build and ``check()`` in one step."""
        spec = cls(**fields)
        spec.check()
        return spec

    def check(self) -> None:
        """Raise ``ConfigError`` for a combination vLLM would reject later, after loading."""
        if self.method == "ngram":
            if self.model is not None:
                raise ConfigError(
                    "speculative: the ngram method drafts from the prompt; drop model"
                )
            low, high = self.prompt_lookup_min, self.prompt_lookup_max
            if low is not None and high is not None and low > high:
                raise ConfigError(
                    f"speculative: prompt_lookup_min ({low}) must not exceed "
                    f"prompt_lookup_max ({high})"
                )
            return
        if not self.model:
            raise ConfigError(
                f"speculative: the {self.method} method needs model= (a local folder)"
            )
        if not (Path(self.model).expanduser() / "config.json").is_file():
            raise ConfigError(
                f"speculative: {self.model!r} is not a local model folder (no config.json); "
                "ttc never downloads models"
            )
        if self.prompt_lookup_min is not None or self.prompt_lookup_max is not None:
            raise ConfigError("speculative: prompt_lookup_min/max apply to the ngram method only")

    def to_vllm(self) -> dict[str, Any]:
        """vLLM's ``speculative_config`` dictionary."""
        config: dict[str, Any] = {
            "method": self.method,
            "num_speculative_tokens": self.num_speculative_tokens,
        }
        if self.model is not None:
            config["model"] = str(Path(self.model).expanduser())
        for key in ("prompt_lookup_min", "prompt_lookup_max", "draft_tensor_parallel_size"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return config
