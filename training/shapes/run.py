"""The layout, recipe and shared settings of one `train-shapes` run (see `seed_hf.training.shapes.train`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import last_complete_checkpoint
from . import world
from .recipe import ShapesRecipe

STAGES = (
    "data",
    "teacher",
    "vae",
    "tokenizer_stage1",
    "tokenizer_stage2",
    "decoder",
    "tokenized",
    "llm_init",
    "llm_lora",
    "llm_merged",
    "llm_full",
    "llm_sft",
    "llm_sequences",
    "seed_shapes",
)
# stage -> the stages whose folders it reads: after the tokenizer, the decoder chain and the LLM chain are
# independent and can run in separate processes, one core each (the VAE can start with the teacher).
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "data": (),
    "teacher": ("data",),
    "vae": ("data",),
    "decoder": ("data", "teacher", "vae", "tokenizer_stage2"),
    "tokenizer_stage1": ("data", "teacher"),
    "tokenizer_stage2": ("data", "teacher", "tokenizer_stage1"),
    "tokenized": ("data", "tokenizer_stage2"),
    "llm_init": ("data", "tokenizer_stage2"),
    "llm_lora": ("llm_init", "tokenized"),
    "llm_merged": ("llm_init", "llm_lora"),
    "llm_full": ("llm_merged", "tokenized"),
    "llm_sft": ("llm_full", "tokenized"),
    "llm_sequences": ("llm_sft", "tokenized"),
    "seed_shapes": ("llm_sequences", "tokenizer_stage2", "decoder"),
}
CHECKPOINTS_FOLDER = "checkpoints"
IMAGE_TEXT_MODEL_FOLDER = "image_text_model"
EXAMPLE_IMAGE_FILE = "example.png"
EXAMPLE_ATTRIBUTES = world.ShapeAttributes("black", "square", "large", "green", "left", "middle")
STAGE_TIMES_FILE = "stage_times.json"
# the stage times as shipped in the final checkpoint, for its model card (`seed_hf.model_cards`)
TRAINING_TIMES_FILE = "training_stage_times.json"
# Recommended inference settings, stored in the checkpoint (generation_config.json, the de-tokenizer's
# model_index.json) so that plain pipeline / generate calls use them: the release's sampling (top_p 0.5,
# temperature 1), a budget of one image plus a text answer (the world's longest caption is ~25 tokens), and a
# decoder guidance of 2 (the unCLIP release's guidance 10 over-saturates this small decoder) over 8 UniPC steps:
# as accurate as 25 DPM-Solver++ steps on held-out prompts and images, a one-prompt text-to-image call ~1.9x
# faster (benchmarks/text_to_image_latency.py measures both).
SHAPES_ANSWER_TOKENS = 48
SHAPES_SAMPLING = {"do_sample": True, "top_p": 0.5, "temperature": 1.0}
SHAPES_DECODER_DEFAULTS = {"default_num_inference_steps": 8, "default_guidance_scale": 2.0}
# the diffusers scheduler class of the shipped de-tokenizer, built from the training scheduler's config
SHAPES_DECODER_SCHEDULER = "UniPCMultistepScheduler"
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# The image-to-text pipeline's default question: captioning records use it, so that the default call captions.
DESCRIBE_QUESTION = "Please provide an accurate and concise description of the given image."
# Every Trainer of the run: CPU, no reporting integrations, checkpoints as the recipe says.
TRAINING_DEFAULTS = {"report_to": "none", "use_cpu": True, "save_strategy": "steps", "logging_steps": 10}


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run the block with `num_threads` torch CPU threads (`None`: unchanged), then restore the caller's count, so that
    an in-process run leaves no global state behind."""
    import torch

    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def trainer_arguments(training: dict[str, Any], output_dir: Path, seed: int) -> dict[str, Any]:
    """`TrainingArguments` keyword arguments of a stage: the run's defaults, then the stage's `training` section."""
    return {**TRAINING_DEFAULTS, "seed": seed, **training, "output_dir": str(output_dir)}


@dataclass
class ShapesRun:
    """One `train-shapes` run: its folder, recipe and the extra `TrainerCallback`s given to every `Trainer`."""

    output_dir: Path
    recipe: ShapesRecipe
    callbacks: Sequence[Any] = ()

    def stage_dir(self, stage: str) -> Path:
        return self.output_dir / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.output_dir / CHECKPOINTS_FOLDER / stage

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def train(self, trainer) -> None:
        """Run a `Trainer` with the run's callbacks, resuming from its newest complete checkpoint if there is one."""
        for callback in self.callbacks:
            trainer.add_callback(callback)
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(trainer.args.output_dir))


def shapes_image_processor(image_size: int):
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor

    return SeedImageProcessor(size={"height": image_size, "width": image_size})
