"""SEED-LLaMA training stages, all run by transformers' `Trainer`.

The paper's recipe (docs: seed-system.md section 3) is a chain of stages, each one a recipe file:

1. ``lora``  -- pre-training with LoRA (r 16, alpha 32, dropout 0.05 on q,k,v,o,gate,up,down) while the
   embeddings, the LM head and every RMSNorm are trained in full (peft ``modules_to_save``);
2. ``merge`` -- ``merge_and_unload`` the adapter into the base weights and save a plain ``seed_llama`` folder;
3. ``full``  -- full fine-tuning of the merged model with the input embeddings frozen;
4. instruction tuning -- a ``lora`` (as the authors' release) or ``full`` stage on conversation records with a
   chat template, loss on the assistant turns only.

Because every stage is a plain `Trainer` run, the same entry point works in one process and under
``accelerate launch`` (DDP, FSDP, DeepSpeed: ``training.deepspeed`` in a recipe) and resumes from the
Trainer's checkpoints (``--resume-from-checkpoint last``).

Run with ``seed-hf train-llm --recipe llm_pretrain_lora_tiny --model DIR --train-files data.jsonl --output-dir OUT``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch

from seed_hf.io_utils import staged_directory
from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout

from . import recipes
from .checkpoints import resolve_resume_from_checkpoint
from .llm_data import (
    SeedLlamaSequenceBuilder,
    build_data_collator,
    build_training_dataset,
)
from .loss_logging import close_process_group
from .recipes import ArgumentsOf

STAGES = ("lora", "merge", "full")

# The paper's LoRA set-up: adapters on every projection; embeddings, LM head and norms trained in full. peft
# matches `modules_to_save` by name suffix, so "norm" alone would already catch the per-layer norms too; they
# are listed for clarity.
DEFAULT_LORA_CONFIG: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "modules_to_save": ["embed_tokens", "lm_head", "input_layernorm", "post_attention_layernorm", "norm"],
}

# The paper's pre-training optimiser; `bf16: auto` turns bf16 on where the hardware computes in it
# (`native_bf16`).
DEFAULT_TRAINING_ARGUMENTS: dict[str, Any] = {
    "learning_rate": 1.5e-4,
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr_rate": 0.05},
    "weight_decay": 0.05,
    "warmup_steps": 0.03,
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "adam_epsilon": 1e-5,
    "max_grad_norm": 1.0,
    "bf16": "auto",
    "logging_steps": 1,
    "save_strategy": "steps",
    "report_to": "none",
}


# `lora` and `training` sections: keyword arguments checked against `peft.LoraConfig` / `TrainingArguments`
LoraArgumentsDict = Annotated[dict[str, Any], ArgumentsOf("peft.LoraConfig")]
LlmTrainingArgumentsDict = Annotated[
    dict[str, Any], ArgumentsOf("transformers.TrainingArguments", extra_values={"bf16": ("auto",)})
]


@dataclass(kw_only=True)
class LlmRecipe:
    """One SEED-LLaMA training stage, as read from a recipe file; `seed-hf train-llm --help` lists its fields."""

    stage: str = field(metadata={"help": "lora, merge or full"})
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "the seed_llama model folder the stage starts from (for merge: the base model the adapter was "
            "trained on); --model"
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "where checkpoints and the stage's result go; --output-dir"}
    )
    # `str` second: `HfArgumentParser` narrows this union to its second member
    train_files: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "record sources (tokenize_images output folders, or files seed_hf.training.data.load_source "
            "opens; formats in seed_hf.training.llm_data), used together; --train-files"
        },
    )
    adapter_name_or_path: str | None = field(
        default=None, metadata={"help": "the LoRA adapter folder to merge (merge only); --adapter"}
    )
    max_length: int = field(default=2048, metadata={"help": "sequences are truncated to this many tokens"})
    packing: bool = field(
        default=False,
        metadata={
            "help": "pack each batch's samples into rows of at most max_length tokens with per-sample "
            "position_ids instead of padding every sample"
        },
    )
    image_first_probability: float = field(
        default=0.5, metadata={"help": "share of image->caption pairs (the others are caption->image)"}
    )
    data_seed: int = field(default=0, metadata={"help": "seed of the per-sample pair-order draw"})
    dataset_num_proc: int | None = field(
        default=None,
        metadata={
            "help": "processes building the training sequences (datasets.map num_proc; null: this one)"
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "chat template of conversation records: vicuna, llama2 or a Jinja template (default: the "
            "tokenizer's own)"
        },
    )
    freeze_embeddings: bool = field(
        default=True, metadata={"help": "keep the input embeddings frozen (full stage)"}
    )
    lora: LoraArgumentsDict = field(
        default_factory=dict,
        metadata={"help": f"LoraConfig arguments over the paper's set-up {DEFAULT_LORA_CONFIG} (lora stage)"},
    )
    training: LlmTrainingArgumentsDict = field(
        default_factory=dict,
        metadata={
            "help": "TrainingArguments arguments over the paper's optimiser "
            f"{DEFAULT_TRAINING_ARGUMENTS}; bf16: auto turns bf16 on where the hardware computes in it "
            "(a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX); "
            "output_dir is the recipe's"
        },
    )

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"`stage` must be one of {STAGES}, got {self.stage!r}")

    def validate(self) -> None:
        """Check that everything the stage needs is set (recipes may leave paths to the command line)."""
        required = ["model_name_or_path", "output_dir"]
        required.append("adapter_name_or_path" if self.stage == "merge" else "train_files")
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"the {self.stage!r} stage needs {', '.join(missing)} (set in the recipe or on the command line)"
            )

    def lora_config(self):
        from peft import LoraConfig, TaskType

        return LoraConfig(task_type=TaskType.CAUSAL_LM, **{**DEFAULT_LORA_CONFIG, **self.lora})

    def training_arguments(self):
        from transformers import TrainingArguments

        kwargs = {**DEFAULT_TRAINING_ARGUMENTS, **self.training, "output_dir": self.output_dir}
        if kwargs["bf16"] == "auto":
            kwargs["bf16"] = native_bf16(use_cpu=kwargs.get("use_cpu", False))
        if kwargs["bf16"] and not kwargs.get("use_cpu") and not torch.accelerator.is_available():
            # the Trainer runs on the CPU here anyway, but transformers refuses bf16 there unless `use_cpu` says so
            kwargs["use_cpu"] = True
        return TrainingArguments(**kwargs)


def native_bf16(use_cpu: bool = False) -> bool:
    """Whether the device the Trainer will use (the CPU with `use_cpu` or without CUDA) computes in bf16
    natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX. Elsewhere bf16 autocast is emulated
    and slower than fp32 (a step of SEED-Shapes' 4-layer LLaMA took 3.5x as long as in fp32 on an AVX512 CPU
    without BF16)."""
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def load_recipe(name_or_path: str | os.PathLike, overrides: Sequence[str] = (), **fields) -> LlmRecipe:
    """
    Load a recipe from a YAML file, or by name from the shipped ``seed_hf/training/recipes`` (``llm_*``).

    ``overrides`` are ``"dotted.key=value"`` strings, the value read as YAML (``training.max_steps=10``, as
    ``--set``); ``fields`` then replace top-level fields (`None`: the recipe's value stays), the ``lora`` and
    ``training`` mappings merged key by key.
    """
    values = recipes.read_recipe_values(name_or_path, overrides, shipped_prefix="llm_")
    for key, value in fields.items():
        if value is None:
            continue
        if (
            key in ("lora", "training")
            and isinstance(value, Mapping)
            and isinstance(values.get(key), Mapping)
        ):
            value = {**values[key], **value}
        values[key] = value
    return recipes.parse_recipe(LlmRecipe, values)


def available_recipes() -> list[str]:
    """Names of the shipped SEED-LLaMA recipes (``llm_*.yaml``; the folder also holds the other stages')."""
    return recipes.shipped_recipes("llm_")


def resolve_chat_template(name_or_template: str | None) -> str | None:
    """A named SEED-LLaMA chat template (``"vicuna"``, ``"llama2"``), a literal Jinja template, or the tokenizer's."""
    if name_or_template is None:
        return None
    if "{" in name_or_template:
        return name_or_template
    from seed_hf.modeling.processing_seed_llama import CHAT_TEMPLATES

    if name_or_template not in CHAT_TEMPLATES:
        raise ValueError(
            f"`chat_template` must be one of {sorted(CHAT_TEMPLATES)} or a Jinja template, got {name_or_template!r}"
        )
    return CHAT_TEMPLATES[name_or_template]


def prepare_model(recipe: LlmRecipe, model):
    """Make ``model`` ready for the stage: LoRA-wrapped (``lora``) or with frozen input embeddings (``full``)."""
    # Packed batches are only split into their samples by the mask builder when no KV cache is used.
    model.config.use_cache = False
    if recipe.stage == "lora":
        from peft import get_peft_model

        return get_peft_model(model, recipe.lora_config())
    if recipe.freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    return model


def load_processing_class(model_name_or_path: str):
    """The folder's `SeedLlamaProcessor` (or its tokenizer when it has no processor) and the tokenizer inside."""
    from transformers import AutoProcessor

    import seed_hf  # noqa: F401  (registers seed_llama with the Auto classes)

    processing_class = AutoProcessor.from_pretrained(model_name_or_path)
    return processing_class, getattr(processing_class, "tokenizer", processing_class)


def keep_components_reachable(config, source_dir: str | os.PathLike) -> None:
    """Make the visual tokenizer / de-tokenizer paths of ``config`` absolute when they are relative to
    ``source_dir``: a stage writes its model to another folder, where a relative path would point nowhere."""
    for name in ("visual_tokenizer_name_or_path", "detokenizer_name_or_path"):
        value = getattr(config, name, None)
        if value and not os.path.isabs(value) and (Path(source_dir) / value).exists():
            setattr(config, name, str((Path(source_dir) / value).resolve()))


def build_trainer(recipe: LlmRecipe, model=None):
    """A `Trainer` for a ``lora`` or ``full`` stage (the model is loaded from the recipe when not given)."""
    from transformers import AutoModelForCausalLM, Trainer, set_seed

    recipe.validate()
    if recipe.stage == "merge":
        raise ValueError("the 'merge' stage does not train; call `merge_lora`")
    # the processor (tokenizer + image processor + chat templates) is saved with every checkpoint
    processing_class, tokenizer = load_processing_class(recipe.model_name_or_path)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(recipe.model_name_or_path)
    keep_components_reachable(model.config, recipe.model_name_or_path)
    if recipe.max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"`max_length` ({recipe.max_length}) exceeds the model's context "
            f"(max_position_embeddings={model.config.max_position_embeddings})"
        )
    layout = SeedImageTokenLayout.from_config(model.config)
    builder = SeedLlamaSequenceBuilder(
        tokenizer,
        layout,
        max_length=recipe.max_length,
        image_first_probability=recipe.image_first_probability,
        seed=recipe.data_seed,
        chat_template=resolve_chat_template(recipe.chat_template),
    )
    dataset = build_training_dataset(recipe.train_files, builder, num_proc=recipe.dataset_num_proc)
    args = recipe.training_arguments()
    # the LoRA initialisation draws random numbers: seed it so that every process and every run starts alike
    set_seed(args.seed)
    return Trainer(
        model=prepare_model(recipe, model),
        args=args,
        train_dataset=dataset,
        data_collator=build_data_collator(
            tokenizer.pad_token_id, packing=recipe.packing, row_length=recipe.max_length
        ),
        processing_class=processing_class,
    )


def train_stage(recipe: LlmRecipe, resume_from_checkpoint: str | bool | None = None):
    """Run a ``lora`` or ``full`` stage and save its result (adapter or model) in ``recipe.output_dir``.

    ``resume_from_checkpoint`` is a checkpoint folder, or `True` for the newest complete one in ``output_dir``
    (incomplete ones, left by an interrupted save, are removed; none: the stage starts fresh)."""
    trainer = build_trainer(recipe)
    trainer.train(
        resume_from_checkpoint=resolve_resume_from_checkpoint(resume_from_checkpoint, recipe.output_dir)
    )
    # the saved model is for inference again
    trainer.model.config.use_cache = True
    trainer.save_model(recipe.output_dir)
    trainer.save_state()
    return trainer


def merge_lora(model_name_or_path: str, adapter_name_or_path: str, output_dir: str | os.PathLike):
    """Merge a LoRA adapter (and its fully trained modules) into its base model; save a plain model folder.

    The folder is written next to ``output_dir`` and renamed into place, so an interrupted merge never leaves a
    half-written model behind.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    processing_class, _ = load_processing_class(model_name_or_path)
    base = AutoModelForCausalLM.from_pretrained(model_name_or_path)
    merged = PeftModel.from_pretrained(base, adapter_name_or_path).merge_and_unload()
    merged.config.use_cache = True
    keep_components_reachable(merged.config, model_name_or_path)

    with staged_directory(output_dir) as staging:
        merged.save_pretrained(staging)
        processing_class.save_pretrained(staging)
    return merged


def run_recipe(recipe: LlmRecipe, resume_from_checkpoint: str | bool | None = None):
    recipe.validate()
    if recipe.stage == "merge":
        return merge_lora(recipe.model_name_or_path, recipe.adapter_name_or_path, recipe.output_dir)
    return train_stage(recipe, resume_from_checkpoint=resume_from_checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed-hf train-llm", description=__doc__.split("\n\n")[0])
    recipes.add_recipe_arguments(parser, LlmRecipe, "llm_", example="training.max_steps=10")
    parser.add_argument("--model", dest="model_name_or_path", help="model folder the stage starts from")
    parser.add_argument(
        "--train-files", nargs="+", help="training record sources (files or tokenize_images folders)"
    )
    parser.add_argument("--adapter", dest="adapter_name_or_path", help="LoRA adapter folder (merge stage)")
    parser.add_argument("--output-dir", help="output folder")
    parser.add_argument(
        "--resume-from-checkpoint",
        metavar="PATH|last",
        help="checkpoint folder to resume from, or 'last' for the newest in the output folder",
    )
    args = parser.parse_args(argv)
    recipe = load_recipe(
        args.recipe,
        args.overrides,
        model_name_or_path=args.model_name_or_path,
        train_files=args.train_files,
        adapter_name_or_path=args.adapter_name_or_path,
        output_dir=args.output_dir,
    )
    resume = True if args.resume_from_checkpoint == "last" else args.resume_from_checkpoint
    run_recipe(recipe, resume_from_checkpoint=resume)
    close_process_group()
    return 0
