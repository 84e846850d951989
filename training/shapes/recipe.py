"""The recipe of a `train-shapes` run: sizes and schedules of every SEED-Shapes stage, as typed dataclasses.

The shipped schedules are `recipes/shapes_smoke.yaml` (a few steps per stage, for tests) and
`recipes/shapes_full.yaml` (the shipped default model); `seed-hf train-shapes --help` lists every field. Model
sizes are free-form config values (`teacher.text_config`, `vae.config`, ...); each stage's `training` holds
`TrainingArguments` keyword arguments, over the run's defaults (CPU, no reporting, the run's seed, the stage's
checkpoint folder as `output_dir`). The LLM stages are [`LlmRecipe`]s whose model, data and output folders the run
fills in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..llm_training import LlmRecipe
from ..recipes import RECIPES_DIR, TrainingArgumentsDict, load_recipe

SCHEDULES = ("smoke", "full")


def _training_field() -> Any:
    return field(
        default_factory=dict,
        metadata={
            "help": "the stage's TrainingArguments (over the run's: CPU, no reporting, the run's seed)"
        },
    )


@dataclass(kw_only=True)
class ShapesDataArguments:
    """How many records of each kind the run draws from the SEED-Shapes world, and the text vocabularies."""

    caption_samples: int = field(
        metadata={"help": "caption pairs (teacher, tokenizer stage 1, LLM pre-training)"}
    )
    image_samples: int | None = field(
        default=None,
        metadata={
            "help": "unique images (VAE, decoder, tokenizer stage 2); null: every seen combination once"
        },
    )
    caption_chat_samples: int = field(metadata={"help": "captioning conversations (instruction tuning)"})
    vqa_samples: int = field(metadata={"help": "question-answer conversations (instruction tuning)"})
    edit_samples: int = field(metadata={"help": "image-editing conversations (instruction tuning)"})
    dialogue_samples: int = field(metadata={"help": "two-turn dialogues (instruction tuning)"})
    clip_qa_samples: int = field(
        default=0,
        metadata={"help": "questions about short clips, frames as consecutive images (several-image stage)"},
    )
    composition_samples: int = field(
        default=0,
        metadata={"help": "two images -> an image that combines their attributes (several-image stage)"},
    )
    in_context_samples: int = field(
        default=0,
        metadata={"help": "example edit pairs, then an image to edit the same way (several-image stage)"},
    )
    sequence_replay_samples: int = field(
        default=0,
        metadata={
            "help": "instruction-tuning records replayed in the several-image stage (a random draw), so that "
            "it keeps the single-image tasks"
        },
    )
    clip_vocab_size: int = field(metadata={"help": "vocabulary of the CLIP tokenizer trained on the texts"})
    llm_vocab_size: int = field(
        metadata={
            "help": "text vocabulary of the LLM tokenizer trained on the texts (image codes come on top)"
        }
    )


@dataclass(kw_only=True)
class ShapesTeacherArguments:
    """The CLIP teacher trained from scratch on the captions (its image embedding is what the decoder draws)."""

    text_config: dict[str, Any] = field(
        metadata={
            "help": "CLIPTextConfig values (the vocabulary and special tokens come from the trained tokenizer; "
            "max_position_embeddings is also the caption length)"
        }
    )
    vision_config: dict[str, Any] = field(
        metadata={"help": "CLIPVisionConfig values (image_size is the run's)"}
    )
    projection_dim: int = field(metadata={"help": "the width of the image and text embeddings"})
    vision_position_embedding_std: float | None = field(
        default=None, metadata={"help": "re-draw the ViT's position embeddings with this standard deviation"}
    )
    training: TrainingArgumentsDict = _training_field()


@dataclass(kw_only=True)
class ShapesVaeArguments:
    """The AutoencoderKL of the decoder's latent space."""

    config: dict[str, Any] = field(
        metadata={"help": "AutoencoderKL values (3 channels in and out, the run's size)"}
    )
    kl_weight: float = field(default=1e-6, metadata={"help": "weight of the KL term"})
    l1_weight: float = field(
        default=0.0, metadata={"help": "weight of an L1 reconstruction term beside the MSE"}
    )
    training: TrainingArgumentsDict = _training_field()


@dataclass(kw_only=True)
class ShapesDecoderArguments:
    """The unCLIP decoder's UNet, conditioned on the SEED tokenizer's generation embedding."""

    unet: dict[str, Any] = field(
        metadata={"help": "UNet2DConditionModel values (sizes, blocks; the conditioning is set by the stage)"}
    )
    noise_schedule: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "DDPMScheduler values over the stage's defaults"}
    )
    conditioning_dropout: float = field(
        default=0.1, metadata={"help": "share of zeroed class vectors (classifier-free guidance)"}
    )
    embedding_noise: float = field(
        default=0.0, metadata={"help": "standard deviation of the noise added to the conditioning embeddings"}
    )
    training: TrainingArgumentsDict = _training_field()


@dataclass(kw_only=True)
class ShapesTokenizerStage1Arguments:
    """SEED tokenizer stage 1 (causal Q-Former), from scratch, with the teacher as distillation target."""

    config: dict[str, Any] = field(
        metadata={
            "help": "SeedTokenizerContrastiveConfig values (image size and generation embedding width are the "
            "run's)"
        }
    )
    vision_position_embedding_std: float | None = field(
        default=None, metadata={"help": "re-draw the ViT's position embeddings with this standard deviation"}
    )
    settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "stage options (freeze_vision_model, teacher_distillation_weight, ...)"},
    )
    max_text_length: int = field(default=32, metadata={"help": "captions are cut to this many tokens"})
    training: TrainingArgumentsDict = _training_field()


@dataclass(kw_only=True)
class ShapesTokenizerStage2Arguments:
    """SEED tokenizer stage 2 (codebook), from stage 1's tokenizer."""

    settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "stage options (codebook_restart_every, loss weights, ...); with attribute_loss_weight the "
            "code groups follow the world's attribute order"
        },
    )
    training: TrainingArgumentsDict = _training_field()


@dataclass(kw_only=True)
class ShapesTokenizedArguments:
    """The tokenization of the training images into SEED codes."""

    batch_size: int = field(default=64, metadata={"help": "images encoded at once"})


@dataclass(kw_only=True)
class ShapesLlmArguments:
    """The SEED-LLaMA model and its training stages (pre-training LoRA, full fine-tuning, instruction tuning on
    single-image records, then on several-image ones)."""

    config: dict[str, Any] = field(
        metadata={"help": "SeedLlamaConfig sizes (the vocabulary and image tokens come from the tokenizers)"}
    )
    lora: LlmRecipe = field(metadata={"help": "the LoRA pre-training stage on the captions (stage: lora)"})
    full: LlmRecipe = field(metadata={"help": "the full fine-tuning stage on the captions (stage: full)"})
    sft: LlmRecipe = field(metadata={"help": "instruction tuning on the conversations (stage: lora or full)"})
    sequences: LlmRecipe = field(
        metadata={
            "help": "instruction tuning on the several-image records and a replay of the others, from the SFT "
            "model (stage: lora or full); skipped (a copy of the SFT model) when the recipe draws none"
        }
    )


@dataclass(kw_only=True)
class ShapesRecipe:
    """A whole `train-shapes` run; `seed-hf train-shapes --help` lists its fields."""

    seed: int = field(default=0, metadata={"help": "seeds the data draws, every model and every Trainer"})
    num_threads: int | None = field(
        default=None,
        metadata={"help": "torch CPU threads (null: torch's default); 1 on a machine whose cores are busy"},
    )
    image_size: int = field(
        default=64, metadata={"help": "the world's images; the teacher's and the SEED tokenizer's input size"}
    )
    data: ShapesDataArguments = field(metadata={"help": "the training records"})
    teacher: ShapesTeacherArguments = field(metadata={"help": "the CLIP teacher"})
    vae: ShapesVaeArguments = field(metadata={"help": "the decoder's autoencoder"})
    decoder: ShapesDecoderArguments = field(metadata={"help": "the unCLIP decoder"})
    tokenizer_stage1: ShapesTokenizerStage1Arguments = field(metadata={"help": "SEED tokenizer stage 1"})
    tokenizer_stage2: ShapesTokenizerStage2Arguments = field(
        default_factory=ShapesTokenizerStage2Arguments, metadata={"help": "SEED tokenizer stage 2"}
    )
    tokenized: ShapesTokenizedArguments = field(
        default_factory=ShapesTokenizedArguments, metadata={"help": "the image tokenization"}
    )
    llm: ShapesLlmArguments = field(metadata={"help": "the LLM and its training stages"})


def shapes_recipe_file(schedule: str | os.PathLike) -> Path:
    """The file of a schedule: `"smoke"`, `"full"` (the shipped `shapes_*.yaml`), or a recipe path."""
    path = Path(schedule)
    if path.is_file():
        return path
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES} or a recipe file, got {schedule!r}")
    return RECIPES_DIR / f"shapes_{schedule}.yaml"


def load_shapes_recipe(schedule: str | os.PathLike = "full", overrides: Sequence[str] = ()) -> ShapesRecipe:
    """
    The recipe of a schedule (`"smoke"`, `"full"` or a YAML path), with `overrides` applied: each
    `"dotted.key=value"`, the value read as YAML (`"decoder.training.max_steps=5"`). A misspelt key or a value of
    the wrong type raises `ValueError` naming it.
    """
    return load_recipe(ShapesRecipe, shapes_recipe_file(schedule), overrides)


__all__ = [
    "SCHEDULES",
    "ShapesDataArguments",
    "ShapesDecoderArguments",
    "ShapesLlmArguments",
    "ShapesRecipe",
    "ShapesTeacherArguments",
    "ShapesTokenizedArguments",
    "ShapesTokenizerStage1Arguments",
    "ShapesTokenizerStage2Arguments",
    "ShapesVaeArguments",
    "load_shapes_recipe",
    "shapes_recipe_file",
]
