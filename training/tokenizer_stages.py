"""Recipes and entry point of SEED tokenizer training (stage 1: causal Q-Former ITC; stage 2: codebook).

A recipe is a YAML (or JSON) file; the shipped ones are in `seed_hf/training/recipes/`
(`tokenizer_stage{1,2}.yaml`: the paper's full-size runs; `tokenizer_stage{1,2}_tiny.yaml`: CPU-sized
runs used by the tests). Keys:

- `stage`: `1` or `2`.
- `seed`: seeds the model's initialisation (and the Trainer).
- `model`: one of `config` (a fresh model from config values; `vision_position_embedding_std` then re-draws the
  ViT's position embeddings with that standard deviation), `tokenizer` (a `SeedTokenizerModel` folder
  or Hub id to continue from: for stage 2, normally the export of stage 1) or, stage 1 only, `blip2` (a
  transformers `Blip2ForImageTextRetrieval` checkpoint, as the paper starts from BLIP-2's Q-Former);
  `settings` adds stage options (`freeze_vision_model`, `label_smoothing`, loss weights, ...).
- `text_tokenizer` (stage 1): the Q-Former's text tokenizer (`bert-base-uncased` in BLIP-2).
- `teacher` (stage 2, and stage 1 with `settings.teacher_distillation_weight`): `pretrained` (a CLIP-style vision model with projection, loaded with
  `AutoModel`-style `CLIPVisionModelWithProjection.from_pretrained`), `config` (a random
  `CLIPVisionConfig`, for tests) or `embeds_column` (precomputed teacher embeddings in the data).
- `data`: `source` (see `seed_hf.training.data.load_source`), `split`, `image_column`, `text_column`,
  `max_text_length` (stage 1).
- `training`: `transformers.TrainingArguments` keyword arguments (`output_dir`, `learning_rate`, ...).
- `export_dir` (optional): where the trained tokenizer is saved as a `SeedTokenizerModel` (with its image
  processor) at the end.

Command line: `seed-hf train-tokenizer --recipe FILE [--set key.sub=value ...] [--resume-from-checkpoint PATH|last]`;
run it under `accelerate launch` (DDP, FSDP, DeepSpeed) exactly as in one process.
"""

import argparse
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from transformers import AutoTokenizer, TrainerCallback, TrainingArguments, set_seed

from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

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

RECIPES_DIR = Path(__file__).parent / "recipes"
STAGE1_LOGGED_TERMS = ("contrastive_loss", "temperature")
STAGE2_LOGGED_TERMS = (
    "vq_loss",
    "codebook_loss",
    "commitment_loss",
    "reconstruction_loss",
    "generation_loss",
)
# The keys a tokenizer recipe may hold (`None`: any key below, e.g. a config's keyword arguments), for overrides.
_RECIPE_KEYS: dict[str, Any] = {
    "stage": None,
    "seed": None,
    "model": dict.fromkeys(("config", "tokenizer", "blip2", "settings", "vision_position_embedding_std")),
    "text_tokenizer": None,
    "teacher": dict.fromkeys(("pretrained", "config", "embeds_column")),
    "data": dict.fromkeys(("source", "split", "image_column", "text_column", "max_text_length")),
    "training": {},
    "export_dir": None,
}
_TOP_LEVEL_KEYS = set(_RECIPE_KEYS)


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so that values such as `save_strategy: no` stay strings."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(text: str):
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _training_argument_keys() -> dict[str, None]:
    from dataclasses import fields

    return dict.fromkeys((field.name for field in fields(TrainingArguments)), None)


def apply_overrides(
    recipe: dict[str, Any], overrides: Sequence[str], extra_keys: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    Set each `"dotted.key=value"` of `overrides` in `recipe` (in place), the value read as YAML 1.2.

    A key must already be in the recipe at its level, or be one that the recipe may add: a `TrainingArguments`
    field under a `training` mapping, or a key of `extra_keys` (the same nesting as the recipe; `None` for a level
    that takes any key, such as a config's keyword arguments). A mapping is only replaced by a mapping or `null`,
    and only a mapping or `null` by a mapping. Raises `ValueError` naming the key, and the valid keys at its level.
    """
    for override in overrides:
        key, separator, value = override.partition("=")
        if not separator or not key:
            raise ValueError(f"override {override!r} must look like dotted.key=value")
        path = key.split(".")
        node, allowed = recipe, extra_keys or {}
        for depth, name in enumerate(path):
            if allowed is not None and name not in node and name not in allowed:
                where = f"under {'.'.join(path[:depth])!r}" if depth else "at the top level"
                raise ValueError(
                    f"override {override!r}: unknown key {name!r} {where}; the valid keys there are "
                    f"{sorted(set(node) | set(allowed))}"
                )
            if allowed is not None:
                allowed = allowed.get(name, {})
                if name == "training":
                    allowed = {**_training_argument_keys(), **allowed}
            if depth == len(path) - 1:
                break
            if node.get(name) is None:
                node[name] = {}
            node = node[name]
            if not isinstance(node, dict):
                raise ValueError(f"override {override!r}: {name!r} is not a mapping in the recipe")
        replacement, current = _read_yaml(value), node.get(path[-1])
        if None not in (replacement, current) and isinstance(replacement, dict) != isinstance(current, dict):
            raise ValueError(
                f"override {override!r}: {key!r} holds a {type(current).__name__} in the recipe, "
                f"got {replacement!r}"
            )
        node[path[-1]] = replacement
    return recipe


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """
    Read a recipe (a shipped recipe's name such as `"tokenizer_stage1_tiny"`, or a path) and apply
    `overrides`, each `"dotted.key=value"` with the value read as YAML (`training.max_steps=5`).
    """
    path = Path(path)
    if not path.exists() and (RECIPES_DIR / f"{path}.yaml").exists():
        path = RECIPES_DIR / f"{path}.yaml"
    if not path.exists():
        shipped = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ValueError(f"recipe {str(path)!r} does not exist (shipped recipes: {shipped})")
    recipe = _read_yaml(path.read_text())
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {str(path)!r} must hold a mapping, got {type(recipe).__name__}")
    apply_overrides(recipe, overrides, _RECIPE_KEYS)
    check_recipe(recipe)
    return recipe


def check_recipe(recipe: dict[str, Any]) -> None:
    """Raise `ValueError` naming the first problem of a tokenizer recipe."""
    if unknown := sorted(set(recipe) - _TOP_LEVEL_KEYS):
        raise ValueError(f"recipe has unknown keys {unknown}; expected some of {sorted(_TOP_LEVEL_KEYS)}")
    if recipe.get("stage") not in (1, 2):
        raise ValueError(f"recipe 'stage' must be 1 or 2, got {recipe.get('stage')!r}")
    model = recipe.get("model") or {}
    sources = [key for key in ("config", "tokenizer", "blip2") if model.get(key) is not None]
    if len(sources) != 1:
        raise ValueError(f"recipe 'model' must have exactly one of config, tokenizer, blip2; got {sources}")
    if recipe["stage"] == 2 and "blip2" in sources:
        raise ValueError(
            "recipe 'model.blip2' is for stage 1; stage 2 starts from model.tokenizer (stage 1's export)"
        )
    if recipe["stage"] == 1 and not recipe.get("text_tokenizer"):
        raise ValueError("a stage-1 recipe needs 'text_tokenizer' (the Q-Former's text tokenizer)")
    distilled = recipe["stage"] == 1 and bool(
        (model.get("settings") or {}).get("teacher_distillation_weight")
    )
    if recipe["stage"] == 2 or distilled:
        teacher = recipe.get("teacher") or {}
        given = [key for key in ("pretrained", "config") if teacher.get(key) is not None]
        if recipe["stage"] == 2 and teacher.get("embeds_column") is not None:
            given.append("embeds_column")
        if len(given) != 1:
            what = "a stage-2 recipe's" if recipe["stage"] == 2 else "teacher_distillation_weight needs a"
            options = "pretrained, config, embeds_column" if recipe["stage"] == 2 else "pretrained, config"
            raise ValueError(f"{what} 'teacher' needs exactly one of {options}; got {given}")
    if not (recipe.get("data") or {}).get("source"):
        raise ValueError("recipe needs 'data.source'")
    if not (recipe.get("training") or {}).get("output_dir"):
        raise ValueError("recipe needs 'training.output_dir'")


def _build_stage1_model(
    model_recipe: dict[str, Any], teacher_recipe: dict[str, Any]
) -> SeedTokenizerForImageTextContrastive:
    settings = model_recipe.get("settings") or {}
    model = _build_contrastive_model(model_recipe, settings)
    if model.config.teacher_distillation_weight:
        model.set_teacher(_build_teacher(teacher_recipe))
    return model


def _build_contrastive_model(model_recipe: dict[str, Any], settings: dict[str, Any]):
    if model_recipe.get("config") is not None:
        model = SeedTokenizerForImageTextContrastive(
            SeedTokenizerContrastiveConfig(**model_recipe["config"], **settings)
        )
        if std := model_recipe.get("vision_position_embedding_std"):
            # a small ViT trained from scratch: position embeddings at the scale of the patch features, or its
            # attention pooling starts (and, on SEED-Shapes, stays) nearly blind to where things are
            nn.init.normal_(model.seed_tokenizer.vision_model.embeddings.position_embedding, std=std)
        return model
    if model_recipe.get("blip2") is not None:
        from transformers import Blip2Config, Blip2ForImageTextRetrieval

        blip2 = Blip2ForImageTextRetrieval.from_pretrained(model_recipe["blip2"])
        blip2_config: Blip2Config = blip2.config
        config = SeedTokenizerContrastiveConfig(
            vision_config=blip2_config.vision_config.to_dict(),
            qformer_config=blip2_config.qformer_config.to_dict(),
            num_query_tokens=blip2_config.num_query_tokens,
            image_text_hidden_size=blip2_config.image_text_hidden_size,
            **settings,
        )
        return SeedTokenizerForImageTextContrastive.from_blip2_state_dict(config, blip2.state_dict())
    tokenizer = SeedTokenizerModel.from_pretrained(model_recipe["tokenizer"])
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


def _build_teacher(teacher_recipe: dict[str, Any]) -> torch.nn.Module | None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if teacher_recipe.get("pretrained") is not None:
        return load_clip_tower(teacher_recipe["pretrained"], "vision")
    if teacher_recipe.get("config") is not None:
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**teacher_recipe["config"]))
    return None


def _build_stage2_model(model_recipe: dict[str, Any], teacher_recipe: dict[str, Any]):
    settings = model_recipe.get("settings") or {}
    teacher = _build_teacher(teacher_recipe)
    if model_recipe.get("config") is not None:
        config = SeedTokenizerCodebookTrainingConfig(**model_recipe["config"], **settings)
        return SeedTokenizerForCodebookTraining(config, teacher=teacher)
    tokenizer = SeedTokenizerModel.from_pretrained(model_recipe["tokenizer"])
    return SeedTokenizerForCodebookTraining.from_tokenizer(tokenizer, teacher=teacher, **settings)


def build_trainer(
    recipe: dict[str, Any], callbacks: Sequence[TrainerCallback] = ()
) -> tuple[LossTermsTrainer, Any]:
    """The `Trainer` of a (checked) recipe, and the image processor of its tokenizer."""
    check_recipe(recipe)
    seed = recipe.get("seed", 0)
    args = TrainingArguments(**{"remove_unused_columns": False, "seed": seed, **recipe["training"]})
    data_recipe, model_recipe = recipe["data"], recipe["model"]
    split = data_recipe.get("split", "train")
    image_column = data_recipe.get("image_column", "image")
    # the main process builds the `datasets` cache; the others then read it
    with args.main_process_first(desc="loading the training data"):
        if recipe["stage"] == 1:
            text_column = data_recipe.get("text_column", "text")
            dataset = load_image_caption_dataset(data_recipe["source"], image_column, text_column, split)
        else:
            dataset = load_image_dataset(data_recipe["source"], image_column, split)
    set_seed(seed)  # the same initial weights in every process
    if recipe["stage"] == 1:
        model = _build_stage1_model(model_recipe, recipe.get("teacher") or {})
        text_tokenizer = AutoTokenizer.from_pretrained(recipe["text_tokenizer"])
        if len(text_tokenizer) > model.config.qformer_config.vocab_size:
            raise ValueError(
                f"text_tokenizer has {len(text_tokenizer)} tokens but the Q-Former's vocab_size is "
                f"{model.config.qformer_config.vocab_size}"
            )
        image_processor = image_processor_for(model_recipe.get("tokenizer") or "", model.config)
        collator = ImageTextCollator(image_processor, text_tokenizer, data_recipe.get("max_text_length", 32))
        logged_terms, codebook_size = STAGE1_LOGGED_TERMS, None
        if model.config.teacher_distillation_weight:
            logged_terms += ("distillation_loss",)
    else:
        teacher_recipe = recipe.get("teacher") or {}
        model = _build_stage2_model(model_recipe, teacher_recipe)
        image_processor = image_processor_for(model_recipe.get("tokenizer") or "", model.config)
        collator = ImageCollator(image_processor, teacher_recipe.get("embeds_column"))
        logged_terms, codebook_size = STAGE2_LOGGED_TERMS, model.config.num_codes
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
    recipe: dict[str, Any] | str | os.PathLike,
    resume_from_checkpoint: str | bool | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> LossTermsTrainer:
    """
    Run a tokenizer recipe with the `Trainer` (checkpoints as `training` says) and, when `export_dir` is set
    and the run has reached its last step, save the trained tokenizer there as a `SeedTokenizerModel` with
    its image processor and the recipe.

    Args:
        recipe: a recipe mapping, or a path / shipped recipe name for [`load_recipe`].
        resume_from_checkpoint: a checkpoint folder, or `True` for the newest complete one in `output_dir` (none:
            the run starts fresh).
        callbacks: extra `TrainerCallback`s.

    Returns:
        The trainer (its `state.log_history` holds the logged losses).
    """
    if not isinstance(recipe, dict):
        recipe = load_recipe(recipe)
    trainer, image_processor = build_trainer(recipe, callbacks)
    trainer.train(
        resume_from_checkpoint=resolve_resume_from_checkpoint(resume_from_checkpoint, trainer.args.output_dir)
    )
    if recipe.get("export_dir") and trainer.state.global_step >= trainer.state.max_steps:
        export_dir = Path(recipe["export_dir"])
        # every process takes part: under FSDP / ZeRO-3 this gathers the sharded weights
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            # written next to the target, then renamed, so a crash never leaves half an export
            temporary = export_dir.with_name(f".{export_dir.name}.tmp{os.getpid()}")
            unwrapped.export_tokenizer(state_dict).save_pretrained(temporary)
            image_processor.save_pretrained(temporary)
            (temporary / "training_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
            if export_dir.exists():
                shutil.rmtree(export_dir)
            os.replace(temporary, export_dir)
        trainer.accelerator.wait_for_everyone()
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf train-tokenizer`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf train-tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe", required=True, help="recipe file, or a shipped recipe name (e.g. tokenizer_stage1_tiny)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set training.max_steps=10 (repeatable)",
    )
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


__all__ = ["build_trainer", "check_recipe", "load_recipe", "main", "train_tokenizer"]
