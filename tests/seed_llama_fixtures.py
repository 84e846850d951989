"""Tiny SEED-LLaMA building blocks for tests (no Hub access): a byte-level BPE tokenizer trained in-process with
LLaMA's special tokens and the SEED image tokens, a tiny `SeedLlamaConfig`/model, a tiny visual tokenizer and
processor, and a fake official checkpoint folder (transformers LLaMA layout + tokenizer with the image tokens).

Importable from any test as `from seed_llama_fixtures import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from seed_hf.modeling.configuration_seed_llama import SeedLlamaConfig
from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
from seed_hf.modeling.image_processing_seed import SeedImageProcessor
from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor
from seed_hf.training.shapes.text_stages import train_text_tokenizer

TINY_NUM_IMAGE_CODES = 64
TINY_TOKENS_PER_IMAGE = 32
TINY_IMAGE_SIZE = 28

_CORPUS = [
    "A photo of a cat sitting on a red sofa.",
    "USER: What is in this image?\nASSISTANT: A dog running on the beach.",
    "[INST] Draw a picture of a mountain at sunset. [/INST] Here is the picture you asked for.",
    "The quick brown fox jumps over the lazy dog. Describe the scene in detail, please!",
    "Can you add a storm effect to the image? Sure, I have successfully added a storm effect.",
    "0123456789 <<SYS>> You are a helpful assistant. <</SYS>>",
]


def image_code_tokens(num_image_codes: int) -> list[str]:
    return [f"<img_{code:05d}>" for code in range(num_image_codes)]


def build_text_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A LLaMA-like tokenizer without image tokens, learned on a tiny corpus."""
    return train_text_tokenizer(_CORPUS, vocab_size)


def build_release_tokenizer(num_image_codes: int = TINY_NUM_IMAGE_CODES) -> PreTrainedTokenizerFast:
    """The tokenizer layout of an official SEED-LLaMA release: text tokens, then `<img_00000>` ..., then `<img>`
    and `</img>` (no `<image>` placeholder: the conversion adds it)."""
    tokenizer = build_text_tokenizer()
    tokenizer.add_tokens(image_code_tokens(num_image_codes))
    tokenizer.add_tokens(["<img>", "</img>"])
    return tokenizer


def build_tiny_tokenizer(num_image_codes: int = TINY_NUM_IMAGE_CODES) -> PreTrainedTokenizerFast:
    """The seed-hf tokenizer: the release layout plus the `<image>` placeholder (special, past the image tokens)."""
    tokenizer = build_release_tokenizer(num_image_codes)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def tiny_visual_tokenizer_config(num_codes: int = TINY_NUM_IMAGE_CODES, **overrides) -> SeedTokenizerConfig:
    return SeedTokenizerConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE,
            patch_size=14,
        ),
        qformer_config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        num_codes=num_codes,
        code_dim=8,
        generation_embedding_dim=16,
        decoder_config=dict(num_attention_heads=2, num_hidden_layers=1),
        **overrides,
    )


def build_tiny_visual_tokenizer(seed: int = 0) -> SeedTokenizerModel:
    torch.manual_seed(seed)
    return SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()


def tiny_seed_llama_config(tokenizer, **overrides) -> SeedLlamaConfig:
    """A 2-layer SEED-LLaMA whose image-token ids are read from `tokenizer` (built by `build_tiny_tokenizer`)."""
    code_0 = tokenizer.convert_tokens_to_ids("<img_00000>")
    boi = tokenizer.convert_tokens_to_ids("<img>")
    eoi = tokenizer.convert_tokens_to_ids("</img>")
    values = dict(
        vocab_size=eoi + 1,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_image_codes=TINY_NUM_IMAGE_CODES,
        tokens_per_image=TINY_TOKENS_PER_IMAGE,
        image_code_start_id=code_0,
        boi_token_id=boi,
        eoi_token_id=eoi,
        image_placeholder_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    values.update(overrides)
    return SeedLlamaConfig(**values)


def build_tiny_seed_llama(tokenizer, seed: int = 0, **overrides) -> SeedLlamaForCausalLM:
    torch.manual_seed(seed)
    return SeedLlamaForCausalLM(tiny_seed_llama_config(tokenizer, **overrides)).eval()


def build_tiny_processor(tokenizer, **kwargs) -> SeedLlamaProcessor:
    image_processor = SeedImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return SeedLlamaProcessor(image_processor, tokenizer, tokens_per_image=TINY_TOKENS_PER_IMAGE, **kwargs)


def save_tiny_seed_llama_folder(folder, seed: int = 0) -> str:
    """A complete seed_llama folder: model + processor, and the visual tokenizer in `visual_tokenizer/`
    (referenced relatively from the config). Returns the folder."""
    folder = str(folder)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_seed_llama(tokenizer, seed=seed, visual_tokenizer_name_or_path="visual_tokenizer")
    model.save_pretrained(folder)
    build_tiny_processor(tokenizer).save_pretrained(folder)
    build_tiny_visual_tokenizer(seed=seed).save_pretrained(os.path.join(folder, "visual_tokenizer"))
    return folder


def save_fake_release_checkpoint(
    folder, num_image_codes: int = TINY_NUM_IMAGE_CODES, seed: int = 0, safe_serialization: bool = True
) -> str:
    """A fake official SEED-LLaMA checkpoint: a plain `LlamaForCausalLM` folder (resized vocabulary) and its
    tokenizer with the added image tokens, as in `AILab-CVC/seed-llama-8b-sft` but tiny (`.bin` weights with
    `safe_serialization=False`, like the release)."""
    folder = str(folder)
    tokenizer = build_release_tokenizer(num_image_codes)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    if not safe_serialization:  # transformers 5 only writes safetensors: write the release's format by hand
        os.remove(os.path.join(folder, "model.safetensors"))
        torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    tokenizer.save_pretrained(folder)
    return folder
