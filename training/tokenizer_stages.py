"""Recipes and entry point of SEED tokenizer training (stage 1: causal Q-Former ITC; stage 2: codebook).

A recipe is a YAML file read into [`TokenizerRecipe`] (see `seed_hf.training.recipes`); the shipped ones are in
`seed_hf/training/recipes/` (`tokenizer_stage{1,2}.yaml`: the paper's full-size runs;
`tokenizer_stage{1,2}_tiny.yaml`: CPU-sized runs used by the tests). `seed-hf train-tokenizer --help` lists every
field.

Command line: `seed-hf train-tokenizer --recipe FILE [--set key.sub=value ...] [--resume-from-checkpoint PATH|last]`;
run it under `accelerate launch` (DDP, FSDP, DeepSpeed) exactly as in one process.
"""

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, TrainerCallback, TrainingArguments, set_seed

from seed_hf.io_utils import staged_directory
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

from . import recipes
from .checkpoints import resolve_resume_from_checkpoint
from .data import ImageCollator, ImageTextCollator, load_image_caption_dataset, load_image_dataset
from .loss_logging import LossTermsTrainer, close_process_group
from .tokenize_images import image_processor_for
from .tokenizer_models import (
    SeedTokenizerCodebookTrainingConfig,
    SeedTokenizerContrastiveConfig,
    SeedTokenizerForCodebookTraining,
    SeedTokenizerForImageTextContrastive,
)

STAGE1_LOGGED_TERMS = ("contrastive_loss", "temperature")
STAGE2_LOGGED_TERMS = (
    "vq_loss",
    "codebook_loss",
    "commitment_loss",
    "reconstruction_loss",
    "generation_loss",
)


@dataclass(kw_only=True)
class TokenizerModelArguments:
    """Where a tokenizer stage's model comes from: exactly one of `config`, `tokenizer`, `blip2`."""

    config: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "a fresh model from these config values (SeedTokenizerContrastiveConfig in stage 1, "
            "SeedTokenizerCodebookTrainingConfig in stage 2)"
        },
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "a SeedTokenizerModel folder or Hub id to continue from (for stage 2, normally the export of "
            "stage 1)"
        },
    )
    blip2: str | None = field(
        default=None,
        metadata={
            "help": "stage 1 only: a transformers Blip2ForImageTextRetrieval checkpoint, whose Q-Former becomes "
            "the causal Q-Former (the paper starts from BLIP-2)"
        },
    )
    settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "stage options over the config (freeze_vision_model, label_smoothing, loss weights, ...)"
        },
    )
    vision_position_embedding_std: float | None = field(
        default=None,
        metadata={
            "help": "with `config`: re-draw the ViT's position embeddings with this standard deviation"
        },
    )


@dataclass(kw_only=True)
class TeacherArguments:
    """The CLIP-style image embedding teacher (stage 2, and stage 1 with `teacher_distillation_weight`)."""

    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "a CLIPVisionModelWithProjection checkpoint (or a full CLIPModel one, whose vision tower is taken)"
        },
    )
    config: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "a random CLIPVisionModelWithProjection from these CLIPVisionConfig values"},
    )
    embeds_column: str | None = field(
        default=None, metadata={"help": "stage 2 only: a data column of precomputed teacher image embeddings"}
    )


@dataclass(kw_only=True)
class TokenizerDataArguments:
    """The training images (and captions, stage 1)."""

    source: str | None = field(
        default=None,
        metadata={"help": "required: the data, any source seed_hf.training.data.load_source opens"},
    )
    split: str = field(default="train", metadata={"help": "the split of the source"})
    image_column: str = field(default="image", metadata={"help": "the column of the images"})
    text_column: str = field(default="text", metadata={"help": "stage 1: the column of the captions"})
    max_text_length: int = field(
        default=32, metadata={"help": "stage 1: captions are cut to this many tokens"}
    )
    attribute_columns: list[str] = field(
        default_factory=list,
        metadata={
            "help": "columns of known image attributes, in query-group order, for the attribute term "
            "(model.settings.attribute_loss_weight)"
        },
    )


@dataclass(kw_only=True)
class TokenizerRecipe:
    """One SEED tokenizer training stage; `seed-hf train-tokenizer --help` lists its fields."""

    stage: int = field(metadata={"help": "1 (causal Q-Former, image-text contrast) or 2 (codebook)"})
    seed: int = field(default=0, metadata={"help": "seeds the model's initialisation and the Trainer"})
    model: TokenizerModelArguments = field(
        default_factory=TokenizerModelArguments,
        metadata={"help": "the model the stage trains: exactly one of config, tokenizer, blip2"},
    )
    text_tokenizer: str | None = field(
        default=None,
        metadata={"help": "stage 1: the Q-Former's text tokenizer (bert-base-uncased in BLIP-2)"},
    )
    teacher: TeacherArguments = field(
        default_factory=TeacherArguments,
        metadata={
            "help": "the image-embedding teacher (stage 2, and stage 1 with model.settings."
            "teacher_distillation_weight): exactly one of pretrained, config (stage 2: or embeds_column)"
        },
    )
    data: TokenizerDataArguments = field(
        default_factory=TokenizerDataArguments,
        metadata={"help": "the training images (and captions, stage 1)"},
    )
    training: recipes.TrainingArgumentsDict = field(
        default_factory=dict,
        metadata={
            "help": "the Trainer's arguments; output_dir is required, seed defaults to the recipe's seed and "
            "remove_unused_columns to false"
        },
    )
    export_dir: str | None = field(
        default=None,
        metadata={
            "help": "where the trained tokenizer is saved as a SeedTokenizerModel (with its image processor) at "
            "the end"
        },
    )

    def validate(self) -> None:
        """Raise `ValueError` naming the first problem of the recipe as a whole."""
        if self.stage not in (1, 2):
            raise ValueError(f"recipe 'stage' must be 1 or 2, got {self.stage!r}")
        sources = [key for key in ("config", "tokenizer", "blip2") if getattr(self.model, key) is not None]
        if len(sources) != 1:
            raise ValueError(
                f"recipe 'model' must have exactly one of config, tokenizer, blip2; got {sources}"
            )
        if self.stage == 2 and "blip2" in sources:
            raise ValueError(
                "recipe 'model.blip2' is for stage 1; stage 2 starts from model.tokenizer (stage 1's export)"
            )
        if self.stage == 1 and not self.text_tokenizer:
            raise ValueError("a stage-1 recipe needs 'text_tokenizer' (the Q-Former's text tokenizer)")
        distilled = self.stage == 1 and bool(self.model.settings.get("teacher_distillation_weight"))
        if self.stage == 2 or distilled:
            given = [key for key in ("pretrained", "config") if getattr(self.teacher, key) is not None]
            if self.stage == 2 and self.teacher.embeds_column is not None:
                given.append("embeds_column")
            if len(given) != 1:
                what = "a stage-2 recipe's" if self.stage == 2 else "teacher_distillation_weight needs a"
                options = "pretrained, config, embeds_column" if self.stage == 2 else "pretrained, config"
                raise ValueError(f"{what} 'teacher' needs exactly one of {options}; got {given}")
        if not self.data.source:
            raise ValueError("recipe needs 'data.source'")
        weighted = bool(self.model.settings.get("attribute_loss_weight"))
        if weighted != bool(self.data.attribute_columns):
            raise ValueError(
                "recipe 'model.settings.attribute_loss_weight' and 'data.attribute_columns' go together: "
                f"got a weight of {self.model.settings.get('attribute_loss_weight')!r} and columns "
                f"{self.data.attribute_columns!r}"
            )
        if not self.training.get("output_dir"):
            raise ValueError("recipe needs 'training.output_dir'")


def load_recipe(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> TokenizerRecipe:
    """
    Read a tokenizer recipe (a shipped recipe's name such as `"tokenizer_stage1_tiny"`, or a path), apply
    `overrides`, each `"dotted.key=value"` with the value read as YAML (`training.max_steps=5`), and check it.
    """
    recipe = recipes.load_recipe(TokenizerRecipe, name_or_path, overrides, shipped_prefix="tokenizer_")
    recipe.validate()
    return recipe


def _build_stage1_model(
    model_recipe: TokenizerModelArguments, teacher_recipe: TeacherArguments
) -> SeedTokenizerForImageTextContrastive:
    model = _build_contrastive_model(model_recipe, model_recipe.settings)
    if model.config.teacher_distillation_weight:
        model.set_teacher(_build_teacher(teacher_recipe))
    return model


def _build_contrastive_model(model_recipe: TokenizerModelArguments, settings: dict[str, Any]):
    if model_recipe.config is not None:
        model = SeedTokenizerForImageTextContrastive(
            SeedTokenizerContrastiveConfig(**model_recipe.config, **settings)
        )
        if std := model_recipe.vision_position_embedding_std:
            # a small ViT trained from scratch: position embeddings at the scale of the patch features, or its
            # attention pooling starts (and, on SEED-Shapes, stays) nearly blind to where things are
            nn.init.normal_(model.seed_tokenizer.vision_model.embeddings.position_embedding, std=std)
        return model
    if model_recipe.blip2 is not None:
        from transformers import Blip2Config, Blip2ForImageTextRetrieval

        blip2 = Blip2ForImageTextRetrieval.from_pretrained(model_recipe.blip2)
        blip2_config: Blip2Config = blip2.config
        config = SeedTokenizerContrastiveConfig(
            vision_config=blip2_config.vision_config.to_dict(),
            qformer_config=blip2_config.qformer_config.to_dict(),
            num_query_tokens=blip2_config.num_query_tokens,
            image_text_hidden_size=blip2_config.image_text_hidden_size,
            **settings,
        )
        return SeedTokenizerForImageTextContrastive.from_blip2_state_dict(config, blip2.state_dict())
    tokenizer = SeedTokenizerModel.from_pretrained(model_recipe.tokenizer)
    return SeedTokenizerForImageTextContrastive.from_tokenizer(tokenizer, **settings)


def load_clip_tower(name_or_path: str, tower: str) -> torch.nn.Module:
    """
    The vision (`CLIPVisionModelWithProjection`) or text (`CLIPTextModel`) tower of a CLIP checkpoint. A full
    `CLIPModel` checkpoint (as released CLIPs and the SEED-Shapes teacher are) is loaded whole and the tower's
    weights taken from it: loading the tower class directly works too, but reports every weight of the other tower
    as unexpected.
    """
    from transformers import CLIPModel, CLIPTextModel, CLIPVisionModelWithProjection

    tower_class = {"vision": CLIPVisionModelWithProjection, "text": CLIPTextModel}[tower]
    if not _is_full_clip(name_or_path):
        return tower_class.from_pretrained(name_or_path)
    clip = CLIPModel.from_pretrained(name_or_path)
    if tower == "vision":  # same module names as in CLIPModel
        weights = {
            name: value
            for name, value in clip.state_dict().items()
            if name.startswith(("vision_model.", "visual_projection."))
        }
    else:  # CLIPTextModel holds the text transformer's modules at its top
        weights = clip.text_model.state_dict()
    model = tower_class(getattr(clip.config, f"{tower}_config"))
    model.load_state_dict(weights, strict=True)
    return model.to(clip.dtype)


def _is_full_clip(name_or_path: str) -> bool:
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(name_or_path)
    return config.get("model_type") == "clip"


def _build_teacher(teacher_recipe: TeacherArguments) -> torch.nn.Module | None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if teacher_recipe.pretrained is not None:
        return load_clip_tower(teacher_recipe.pretrained, "vision")
    if teacher_recipe.config is not None:
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**teacher_recipe.config))
    return None


def _build_stage2_model(model_recipe: TokenizerModelArguments, teacher_recipe: TeacherArguments):
    teacher = _build_teacher(teacher_recipe)
    if model_recipe.config is not None:
        config = SeedTokenizerCodebookTrainingConfig(**model_recipe.config, **model_recipe.settings)
        return SeedTokenizerForCodebookTraining(config, teacher=teacher)
    tokenizer = SeedTokenizerModel.from_pretrained(model_recipe.tokenizer)
    return SeedTokenizerForCodebookTraining.from_tokenizer(
        tokenizer, teacher=teacher, **model_recipe.settings
    )


def build_trainer(
    recipe: TokenizerRecipe | Mapping[str, Any], callbacks: Sequence[TrainerCallback] = ()
) -> tuple[LossTermsTrainer, Any]:
    """
    The `Trainer` of a recipe (a [`TokenizerRecipe`], or a mapping of its fields, checked the same way), and the
    image processor of its tokenizer.
    """
    if not isinstance(recipe, TokenizerRecipe):
        recipe = recipes.parse_recipe(TokenizerRecipe, recipe)
    recipe.validate()
    args = TrainingArguments(**{"remove_unused_columns": False, "seed": recipe.seed, **recipe.training})
    data, model_recipe = recipe.data, recipe.model
    # the main process builds the `datasets` cache; the others then read it
    with args.main_process_first(desc="loading the training data"):
        if recipe.stage == 1:
            dataset = load_image_caption_dataset(data.source, data.image_column, data.text_column, data.split)
        else:
            dataset = load_image_dataset(data.source, data.image_column, data.split)
    set_seed(recipe.seed)  # the same initial weights in every process
    if recipe.stage == 1:
        model = _build_stage1_model(model_recipe, recipe.teacher)
        text_tokenizer = AutoTokenizer.from_pretrained(recipe.text_tokenizer)
        if len(text_tokenizer) > model.config.qformer_config.vocab_size:
            raise ValueError(
                f"text_tokenizer has {len(text_tokenizer)} tokens but the Q-Former's vocab_size is "
                f"{model.config.qformer_config.vocab_size}"
            )
        image_processor = image_processor_for(model_recipe.tokenizer or "", model.config)
        collator = ImageTextCollator(
            image_processor, text_tokenizer, data.max_text_length, data.attribute_columns
        )
        logged_terms, codebook_size = STAGE1_LOGGED_TERMS, None
        if model.config.teacher_distillation_weight:
            logged_terms += ("distillation_loss",)
    else:
        model = _build_stage2_model(model_recipe, recipe.teacher)
        image_processor = image_processor_for(model_recipe.tokenizer or "", model.config)
        collator = ImageCollator(image_processor, recipe.teacher.embeds_column, data.attribute_columns)
        logged_terms, codebook_size = STAGE2_LOGGED_TERMS, model.config.num_codes
    if model.config.attribute_loss_weight:
        logged_terms += ("attribute_loss",)
    trainer = LossTermsTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=list(callbacks),
        logged_terms=logged_terms,
        codebook_size=codebook_size,
    )
    return trainer, image_processor


def train_tokenizer(
    recipe: TokenizerRecipe | str | os.PathLike,
    resume_from_checkpoint: str | bool | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> LossTermsTrainer:
    """
    Run a tokenizer recipe with the `Trainer` (checkpoints as `training` says) and, when `export_dir` is set
    and the run has reached its last step, save the trained tokenizer there as a `SeedTokenizerModel` with
    its image processor and the recipe.

    Args:
        recipe: a [`TokenizerRecipe`], or a path / shipped recipe name for [`load_recipe`].
        resume_from_checkpoint: a checkpoint folder, or `True` for the newest complete one in `output_dir` (none:
            the run starts fresh).
        callbacks: extra `TrainerCallback`s.

    Returns:
        The trainer (its `state.log_history` holds the logged losses).
    """
    if not isinstance(recipe, TokenizerRecipe):
        recipe = load_recipe(recipe)
    trainer, image_processor = build_trainer(recipe, callbacks)
    trainer.train(
        resume_from_checkpoint=resolve_resume_from_checkpoint(resume_from_checkpoint, trainer.args.output_dir)
    )
    if recipe.export_dir and trainer.state.global_step >= trainer.state.max_steps:
        export_dir = Path(recipe.export_dir)
        # every process takes part: under FSDP / ZeRO-3 this gathers the sharded weights
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            # a crash never leaves half an export, and an earlier export stays until the new one is complete
            with staged_directory(export_dir) as staging:
                unwrapped.export_tokenizer(state_dict).save_pretrained(staging)
                image_processor.save_pretrained(staging)
                (staging / "training_recipe.json").write_text(
                    json.dumps(dataclasses.asdict(recipe), indent=2)
                )
        trainer.accelerator.wait_for_everyone()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf train-tokenizer`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf train-tokenizer", description=__doc__.splitlines()[0])
    recipes.add_recipe_arguments(parser, TokenizerRecipe, "tokenizer_", example="training.max_steps=10")
    parser.add_argument(
        "--resume-from-checkpoint",
        default=None,
        help="checkpoint folder to resume from, or 'last' for the newest in output_dir",
    )
    args = parser.parse_args(argv)
    resume = True if args.resume_from_checkpoint == "last" else args.resume_from_checkpoint
    trainer = train_tokenizer(load_recipe(args.recipe, args.overrides), resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        if losses:
            print(f"loss: first {losses[0]:.6f}, last {losses[-1]:.6f} over {len(losses)} logs")
    del trainer
    close_process_group()
    return 0


__all__ = [
    "TeacherArguments",
    "TokenizerDataArguments",
    "TokenizerModelArguments",
    "TokenizerRecipe",
    "build_trainer",
    "load_recipe",
    "main",
    "train_tokenizer",
]
