"""Tiny Hugging Face models built offline for tests: a small BPE tokenizer and a 2-layer
Llama with random weights, saved and ready for the Auto classes, and a tiny Qwen2 process reward
model saved the way Qwen2.5-Math-PRM is (its own head, no transformers class), each in about a
second."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(
    corpus: Sequence[str],
    specials: Sequence[str],
    *,
    vocab_size: int = 300,
    chat_template: str | None = CHAT_TEMPLATE,
) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``, ``specials`` as special tokens
    (``<s>``, ``</s>``, ``<unk>`` and ``<pad>`` among them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        list(corpus),
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", raw.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llama(
    folder: Path,
    corpus: Sequence[str],
    specials: Sequence[str],
    *,
    vocab_size: int = 300,
    chat_template: str | None = CHAT_TEMPLATE,
    classifier: bool = False,
    heads: int = 4,
) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus`` (``specials`` as special tokens) and save
    it with a 2-layer Llama (hidden size 64): a causal LM, or a 2-label token classifier.
    ``heads=1`` makes the head size 64, which vLLM's CPU attention needs (16 it refuses)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    tokenizer = build_tokenizer(
        corpus, specials, vocab_size=vocab_size, chat_template=chat_template
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=min(2, heads),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = LlamaForTokenClassification(config) if classifier else LlamaForCausalLM(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


#: ChatML, as Qwen's tokenizers render chats.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen_prm(folder: Path, corpus: Sequence[str], *, vocab_size: int = 320) -> Path:
    """A 2-layer Qwen2 process reward model saved as Qwen2.5-Math-PRM ships: config
    architecture ``Qwen2ForProcessRewardModel`` (2 labels), weights ``model.*`` for the decoder
    and ``score.0``/``score.2`` for its head (Linear, ReLU, Linear), a ChatML tokenizer with
    ``<extra_0>``. Head size 64, so vLLM's CPU attention takes it."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    tokenizer = build_tokenizer(
        corpus, specials, vocab_size=vocab_size, chat_template=CHATML_TEMPLATE
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        tie_word_embeddings=False,
        architectures=["Qwen2ForProcessRewardModel"],
    )
    torch.manual_seed(0)
    decoder = Qwen2Model(config)
    head = torch.nn.Sequential(
        torch.nn.Linear(config.hidden_size, config.hidden_size),
        torch.nn.ReLU(),
        torch.nn.Linear(config.hidden_size, 2),
    )
    torch.nn.init.normal_(head[2].weight, std=0.5)  # scores spread out, not all near 0.5
    state = {f"model.{k}": v.contiguous() for k, v in decoder.state_dict().items()}
    state.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
