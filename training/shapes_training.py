"""SEED-Shapes: train the whole SEED stack on the synthetic shapes world, on a CPU, with the project's training code.

`seed-hf train-shapes --output-dir DIR [--schedule smoke|full] [--stages NAME ...] [--set KEY=VALUE ...]
[--num-threads N]` runs the stages below in order. Sizes and schedules come from a recipe
(`recipes/shapes_smoke.yaml`: a few steps per stage, for tests; `recipes/shapes_full.yaml`: the shipped default
model, with its measured step times); `--set teacher.training.max_steps=3` overrides one value, `--num-threads 1`
keeps torch to one thread (much faster when other processes share the cores), `--jobs 2` runs independent stages
side by side, each in a one-thread process (on 2 cores: the VAE beside the teacher and tokenizer, the decoder
beside the LLM stages).

=================  ======================================================================================
stage              what it trains or writes (every output is a folder `DIR/<stage>`)
=================  ======================================================================================
data               the training sets (`seed_hf.training.shapes`: captions, unique images, chat records for
                   SFT), a CLIP BPE tokenizer and a LLaMA-style byte-level BPE tokenizer with the image tokens
teacher            a tiny transformers `CLIPModel`, image-text contrastive (`return_loss=True`), `Trainer`
vae                a tiny diffusers `AutoencoderKL` (64x64x3 -> 16x16x4 with three blocks), `Trainer`
tokenizer_stage1   SEED tokenizer stage 1 (causal Q-Former ITC), `seed_hf.training.tokenizer_stages`
tokenizer_stage2   SEED tokenizer stage 2 (codebook, heads; the generation head regresses the teacher)
decoder            the unCLIP UNet (diffusers `UNet2DConditionModel`, projection class embedding fed an
                   image embedding and its noise-level embedding, as in unCLIP), `Trainer`, on the embedding
                   it is fed at use: the SEED tokenizer's generation embedding decoded from the image's codes;
                   saved as a [`SeedUnCLIPPipeline`] without tokenizer, with a DPM-Solver++ scheduler
tokenized          the captions and chat records with their images as SEED codes (`tokenize_images`)
llm_init           a random SEED-LLaMA with the shapes tokenizer and the tokenizer's image processor
llm_lora           LLM pre-training with LoRA on caption pairs (`seed_hf.training.llm_training`)
llm_merged         the adapter merged into the weights
llm_full           full pre-training, input embeddings frozen
llm_sft            instruction tuning on chat records (VQA, captioning, generation, edits, dialogues);
                   a LoRA recipe is merged into the weights at the end
seed_shapes        the complete checkpoint (`save_seed_checkpoint`): LLM + processor, `visual_tokenizer/`,
                   `detokenizer/`; `pipeline("seed-text-to-image", model=DIR/seed_shapes)` loads it
=================  ======================================================================================

Every stage writes its folder atomically (a temporary sibling renamed into place) and is skipped when the folder
exists, so a run interrupted anywhere continues where it stopped: a training stage resumes from the newest
`Trainer` checkpoint in `DIR/checkpoints/<stage>/`, image tokenization from its last written shard. The wall
time of every stage is added to `DIR/stage_times.json`, an interrupted run's included (its resumption goes on from
where it stopped).

The unCLIP decoder's and VAE's training models (`AutoencoderKLForTraining`, `UnCLIPDecoderForTraining`) are
plain `nn.Module`s whose `forward` returns `{"loss": ...}`, so that they run on the `Trainer` (checkpoints,
resumption, bf16 autocast on CPU, `accelerate launch`) like every other stage.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from seed_hf.io_utils import staged_directory
from seed_hf.logging_utils import get_logger

from . import shapes
from .checkpoints import last_complete_checkpoint
from .tokenizer_stages import apply_overrides, load_clip_tower

logger = get_logger(__name__)
RECIPES_DIR = Path(__file__).parent / "recipes"
SCHEDULES = ("smoke", "full")
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
    "seed_shapes": ("llm_sft", "tokenizer_stage2", "decoder"),
}
CHECKPOINTS_FOLDER = "checkpoints"
IMAGE_TEXT_MODEL_FOLDER = "image_text_model"
EXAMPLE_IMAGE_FILE = "example.png"
EXAMPLE_ATTRIBUTES = shapes.ShapeAttributes("black", "square", "large", "green", "left", "middle")
STAGE_TIMES_FILE = "stage_times.json"
# the stage times as shipped in the final checkpoint, for its model card (`seed_hf.model_cards`)
TRAINING_TIMES_FILE = "training_stage_times.json"
# Recommended inference settings, stored in the checkpoint (generation_config.json, the de-tokenizer's
# model_index.json) so that plain pipeline / generate calls use them: the release's sampling (top_p 0.5,
# temperature 1), a budget of one image plus a text answer (the world's longest caption is ~25 tokens), and a
# decoder guidance of 2 over 25 steps (the unCLIP release's guidance 10 over-saturates this small decoder).
SHAPES_ANSWER_TOKENS = 48
SHAPES_SAMPLING = {"do_sample": True, "top_p": 0.5, "temperature": 1.0}
SHAPES_DECODER_DEFAULTS = {"default_num_inference_steps": 25, "default_guidance_scale": 2.0}
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# The image-to-text pipeline's default question: captioning records use it, so that the default call captions.
DESCRIBE_QUESTION = "Please provide an accurate and concise description of the given image."
# Every Trainer of the run: CPU, no reporting integrations, checkpoints as the recipe says.
_TRAINING_DEFAULTS = {"report_to": "none", "use_cpu": True, "save_strategy": "steps", "logging_steps": 10}


# ------------------------------------------------------------------------------------------------------- recipe
def load_shapes_recipe(schedule: str = "full", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """
    The recipe of a schedule (`"smoke"` or `"full"`, or a YAML path), with `overrides` applied: each
    `"dotted.key=value"`, the value read as YAML (`"decoder.training.max_steps=5"`).
    """
    path = Path(schedule)
    if not path.is_file():
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES} or a recipe file, got {schedule!r}")
        path = RECIPES_DIR / f"shapes_{schedule}.yaml"
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {str(path)!r} must hold a YAML mapping")
    return apply_overrides(recipe, overrides)


def _training_arguments(stage_recipe: dict[str, Any], output_dir: Path, seed: int) -> dict[str, Any]:
    return {
        **_TRAINING_DEFAULTS,
        "seed": seed,
        **(stage_recipe.get("training") or {}),
        "output_dir": str(output_dir),
    }


# ------------------------------------------------------------------------------------------------------- text
def train_clip_tokenizer(texts: Sequence[str], vocab_size: int, model_max_length: int):
    """
    A transformers `CLIPTokenizer` (CLIP's normalisation and pre-tokenization, byte-level BPE with `</w>` word
    ends) whose merges are learned on `texts`, `vocab_size` tokens at most.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    reference = CLIPTokenizer().backend_tokenizer
    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=CLIP_EOS))
    backend.normalizer = reference.normalizer
    backend.pre_tokenizer = reference.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[CLIP_BOS, CLIP_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    learned = json.loads(backend.to_str())["model"]
    merges = [
        tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in learned["merges"]
    ]
    # The trainer numbers the word-final characters (`a</w>`) in hash-map order, which changes from run to run;
    # number them in sorted order after the special tokens and the byte alphabet, and merges in their order, so
    # that the same texts always give the same ids.
    merged = list(dict.fromkeys("".join(merge) for merge in merges))
    num_fixed = 2 + len(pre_tokenizers.ByteLevel.alphabet())
    fixed = sorted(learned["vocab"], key=learned["vocab"].get)[:num_fixed]
    rest = sorted(set(learned["vocab"]) - set(fixed) - set(merged))
    vocab = {token: index for index, token in enumerate(dict.fromkeys([*fixed, *rest, *merged]))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def train_text_tokenizer(texts: Sequence[str], vocab_size: int):
    """
    A LLaMA-style text tokenizer learned on `texts`: byte-level BPE (`decode(encode(text)) == text`) with
    `<unk>`=0, `<s>`=1, `</s>`=2, `<s>` prepended, padding with `<unk>` on the left (for batched generation).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="left",
    )


def train_llm_tokenizer(texts: Sequence[str], vocab_size: int, num_image_codes: int):
    """
    A SEED-LLaMA tokenizer learned on `texts` ([`train_text_tokenizer`]), then the image tokens `<img_00000>` ...
    in the release's layout (codes, `<img>`, `</img>`) and the `<image>` placeholder.
    """
    tokenizer = train_text_tokenizer(texts, vocab_size)
    tokenizer.add_tokens([f"<img_{code:05d}>" for code in range(num_image_codes)])
    tokenizer.add_tokens(["<img>", "</img>"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def _text(text: str) -> dict[str, str | None]:
    return {"type": "text", "text": text}


_IMAGE = {"type": "image", "text": None}
_CHAT_FEATURES = datasets.Features(
    {
        "messages": datasets.List(
            {
                "role": datasets.Value("string"),
                "content": datasets.List(
                    {"type": datasets.Value("string"), "text": datasets.Value("string")}
                ),
            }
        ),
        "images": datasets.List(datasets.Image()),
    }
)


def _undecoded(dataset: datasets.Dataset, *columns: str) -> datasets.Dataset:
    """The dataset with its image columns as PNG bytes (no decoding and re-encoding when copied)."""
    for column in columns:
        feature = dataset.features[column]
        decoded_off = (
            datasets.List(datasets.Image(decode=False))
            if isinstance(feature, datasets.List)
            else datasets.Image(decode=False)
        )
        dataset = dataset.cast_column(column, decoded_off)
    return dataset


def build_chat_records(data_recipe: dict[str, Any], seed: int) -> datasets.Dataset:
    """
    Instruction-tuning records in the chat layout of `seed_hf.training.data`: captioning (the image-to-text
    pipeline's default question -> caption), generation (caption -> image), VQA (image + question -> answer),
    edits (image + instruction -> image) and the world's multi-turn dialogues.
    """
    messages, images = [], []
    captions = _undecoded(
        shapes.caption_dataset("train", data_recipe["caption_chat_samples"], seed=seed + 1), "image"
    )
    for index, row in enumerate(captions):
        if index % 2:
            messages.append(
                [
                    {"role": "user", "content": [_IMAGE, _text(DESCRIBE_QUESTION)]},
                    {"role": "assistant", "content": [_text(row["text"])]},
                ]
            )
        else:
            messages.append(
                [
                    {"role": "user", "content": [_text(row["text"])]},
                    {"role": "assistant", "content": [_IMAGE]},
                ]
            )
        images.append([row["image"]])
    for row in _undecoded(shapes.vqa_dataset("train", data_recipe["vqa_samples"], seed=seed), "image"):
        messages.append(
            [
                {"role": "user", "content": [_IMAGE, _text(row["question"])]},
                {"role": "assistant", "content": [_text(row["answer"])]},
            ]
        )
        images.append([row["image"]])
    for row in _undecoded(
        shapes.edit_dataset("train", data_recipe["edit_samples"], seed=seed), "image", "target_image"
    ):
        messages.append(
            [
                {"role": "user", "content": [_IMAGE, _text(row["instruction"])]},
                {"role": "assistant", "content": [_IMAGE]},
            ]
        )
        images.append([row["image"], row["target_image"]])
    dialogues = _undecoded(
        shapes.dialogue_dataset("train", data_recipe["dialogue_samples"], seed=seed), "images"
    )
    messages.extend(dialogues["messages"])
    images.extend(dialogues["images"])
    return datasets.Dataset.from_dict({"messages": messages, "images": images}, features=_CHAT_FEATURES)


def _chat_texts(records: datasets.Dataset) -> list[str]:
    return [
        part["text"]
        for row in records["messages"]
        for turn in row
        for part in turn["content"]
        if part["text"]
    ]


# ------------------------------------------------------------------------------------- VAE and unCLIP decoder
def images_to_pixels(images: Sequence) -> torch.Tensor:
    """PIL images -> `[B, 3, H, W]` floats in [-1, 1] (the VAE's range)."""
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


class ContrastiveCollator:
    """An image-caption collator's batches with `return_loss=True`, so that `CLIPModel` returns its contrastive loss."""

    def __init__(self, image_text_collator: Callable):
        self.image_text_collator = image_text_collator

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self.image_text_collator(records), "return_loss": True}


class PixelCollator:
    """Batches image records as `pixel_values` in [-1, 1] for [`AutoencoderKLForTraining`]."""

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"pixel_values": images_to_pixels([record["image"] for record in records])}


class AutoencoderKLForTraining(nn.Module):
    """
    Training model of a diffusers `AutoencoderKL`:
    `loss = MSE(decode(z), x) + l1_weight * L1(decode(z), x) + kl_weight * KL(q(z|x) || N(0, I))` with `z` sampled
    from the posterior (the VAE objective without the perceptual and adversarial terms, which flat-coloured shapes
    do not need; the L1 term keeps pulling on the last few levels of colour error, where MSE's gradient fades).
    """

    def __init__(self, vae, kl_weight: float = 1e-6, l1_weight: float = 0.0):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.l1_weight = l1_weight

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        posterior = self.vae.encode(pixel_values).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample.float()
        reconstruction_loss = F.mse_loss(reconstruction, pixel_values.float())
        if self.l1_weight:
            reconstruction_loss = reconstruction_loss + self.l1_weight * F.l1_loss(
                reconstruction, pixel_values.float()
            )
        kl_loss = posterior.kl().mean() / pixel_values[0].numel()
        return {"loss": reconstruction_loss + self.kl_weight * kl_loss}


class UnCLIPDecoderForTraining(nn.Module):
    """
    Training model of the unCLIP decoder: the denoising loss of a diffusers `UNet2DConditionModel` whose
    projection class embedding receives `[image embedding, noise-level embedding]` as [`SeedUnCLIPPipeline`]
    builds it at noise level 0, and whose cross-attention sees the (constant) text encoding of the empty prompt.

    With probability `conditioning_dropout` the whole class vector is zeroed: the pipeline's unconditional
    branch of classifier-free guidance. `embedding_noise` adds Gaussian noise of that many per-dimension
    standard deviations (`embedding_std`) to the embeddings, so that the decoder tolerates the small errors of
    the SEED tokenizer's generation embedding, which regresses the teacher's.

    Args:
        unet: the UNet (`class_embed_type="projection"`, projection input `2 * embedding_dim`).
        noise_scheduler: a diffusers scheduler with `add_noise` and `get_velocity` (`DDPMScheduler`); its
            `prediction_type` (`"epsilon"` or `"v_prediction"`) sets the target.
        prompt_embeds: `[1, length, width]` encoding of the empty prompt.
        embedding_std: `[embedding_dim]` standard deviation of the training embeddings.
    """

    def __init__(
        self,
        unet,
        noise_scheduler,
        prompt_embeds: torch.Tensor,
        embedding_std: torch.Tensor,
        conditioning_dropout: float = 0.1,
        embedding_noise: float = 0.0,
    ):
        super().__init__()
        from diffusers.models.embeddings import get_timestep_embedding

        if noise_scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type must be 'epsilon' or 'v_prediction', got {noise_scheduler.config.prediction_type!r}"
            )
        self.unet = unet
        self.noise_scheduler = noise_scheduler
        self.conditioning_dropout = conditioning_dropout
        self.embedding_noise = embedding_noise
        embedding_dim = embedding_std.shape[-1]
        level_embedding = get_timestep_embedding(
            torch.zeros(1, dtype=torch.long), embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        # constants, rebuilt from the arguments: kept out of checkpoints
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone(), persistent=False)
        self.register_buffer("embedding_std", embedding_std.detach().reshape(1, -1).clone(), persistent=False)
        self.register_buffer("level_embedding", level_embedding, persistent=False)

    def class_labels(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """The UNet's class input `[B, 2 D]`: the embeddings and the embedding of noise level 0."""
        return torch.cat([image_embeds, self.level_embedding.expand(image_embeds.shape[0], -1)], dim=1)

    def forward(self, latents: torch.Tensor, image_embeds: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        batch_size = latents.shape[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (batch_size,), device=latents.device
        )
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        if self.embedding_noise:
            image_embeds = image_embeds + self.embedding_noise * self.embedding_std * torch.randn_like(
                image_embeds
            )
        class_labels = self.class_labels(image_embeds)
        keep = torch.rand(batch_size, 1, device=latents.device) >= self.conditioning_dropout
        class_labels = class_labels * keep
        prediction = self.unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=self.prompt_embeds.expand(batch_size, -1, -1),
            class_labels=class_labels,
        ).sample
        return {"loss": F.mse_loss(prediction.float(), target.float())}


# ------------------------------------------------------------------------------------------------------ stages
@dataclass
class ShapesRun:
    """One `train-shapes` run: its folder, recipe and the extra `TrainerCallback`s given to every `Trainer`."""

    output_dir: Path
    recipe: dict[str, Any]
    callbacks: Sequence[Any] = ()

    def stage_dir(self, stage: str) -> Path:
        return self.output_dir / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.output_dir / CHECKPOINTS_FOLDER / stage

    @property
    def seed(self) -> int:
        return int(self.recipe.get("seed", 0))

    def train(self, trainer) -> None:
        """Run a `Trainer` with the run's callbacks, resuming from its newest complete checkpoint if there is one."""
        for callback in self.callbacks:
            trainer.add_callback(callback)
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(trainer.args.output_dir))


def _image_processor(image_size: int):
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor

    return SeedImageProcessor(size={"height": image_size, "width": image_size})


def run_data(run: ShapesRun, staging: Path) -> None:
    data = run.recipe["data"]
    seed = run.seed
    captions = shapes.caption_dataset("train", data["caption_samples"], seed=seed)
    captions.save_to_disk(staging / "captions")
    # every seen combination once (or the first `image_samples`): the VAE, decoder and codebook data
    shapes.caption_dataset("train", data.get("image_samples"), seed=seed).save_to_disk(staging / "images")
    chat = build_chat_records(data, seed)
    chat.save_to_disk(staging / "chat")
    texts = list(captions["text"]) + _chat_texts(chat)
    teacher_text = run.recipe["teacher"]["text_config"]
    train_clip_tokenizer(
        texts, data["clip_vocab_size"], teacher_text["max_position_embeddings"]
    ).save_pretrained(staging / "clip_tokenizer")
    num_codes = run.recipe["tokenizer_stage1"]["config"]["num_codes"]
    train_llm_tokenizer(texts, data["llm_vocab_size"], num_codes).save_pretrained(staging / "llm_tokenizer")


def run_teacher(run: ShapesRun, staging: Path) -> None:
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, Trainer, TrainingArguments, set_seed

    from .data import ImageTextCollator, load_image_caption_dataset

    recipe = run.recipe["teacher"]
    data_dir = run.stage_dir("data")
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "clip_tokenizer")
    image_size = run.recipe["image_size"]
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = CLIPConfig(
        text_config={
            **recipe["text_config"],
            "vocab_size": len(tokenizer),
            "projection_dim": recipe["projection_dim"],
            **special,
        },
        # the vision tower also loads alone, as the stage-2 teacher (`CLIPVisionModelWithProjection`)
        vision_config={
            **recipe["vision_config"],
            "image_size": image_size,
            "projection_dim": recipe["projection_dim"],
        },
        projection_dim=recipe["projection_dim"],
    )
    set_seed(run.seed)
    model = CLIPModel(config)
    if std := recipe.get("vision_position_embedding_std"):
        # as for the tokenizer's ViT (see `tokenizer_stages`): CLIP's 0.02 leaves position all but unread
        nn.init.normal_(model.vision_model.embeddings.position_embedding.weight, std=std)
    image_processor = _image_processor(image_size)
    text_collator = ImageTextCollator(
        image_processor, tokenizer, recipe["text_config"]["max_position_embeddings"]
    )
    args = TrainingArguments(
        **_training_arguments(recipe, run.checkpoint_dir("teacher"), run.seed), remove_unused_columns=False
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=load_image_caption_dataset(str(data_dir / "captions")),
        data_collator=ContrastiveCollator(text_collator),
    )
    run.train(trainer)
    trainer.model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    image_processor.save_pretrained(staging)


def run_vae(run: ShapesRun, staging: Path) -> None:
    from diffusers import AutoencoderKL
    from transformers import Trainer, TrainingArguments, set_seed

    recipe = run.recipe["vae"]
    set_seed(run.seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, sample_size=run.recipe["image_size"], **recipe["config"]
    )
    model = AutoencoderKLForTraining(
        vae, kl_weight=recipe.get("kl_weight", 1e-6), l1_weight=recipe.get("l1_weight", 0.0)
    )
    images = datasets.load_from_disk(str(run.stage_dir("data") / "images"))
    args = TrainingArguments(
        **_training_arguments(recipe, run.checkpoint_dir("vae"), run.seed), remove_unused_columns=False
    )
    trainer = Trainer(model=model, args=args, train_dataset=images, data_collator=PixelCollator())
    run.train(trainer)
    vae = trainer.accelerator.unwrap_model(trainer.model).vae.eval()
    # unit-variance latents, as Stable Diffusion's scaling factor makes them
    latents = _encode_latents(vae, images["image"], scaling_factor=1.0)
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    vae.save_pretrained(staging)


@torch.no_grad()
def _encode_latents(vae, images: Sequence, scaling_factor: float, batch_size: int = 64) -> torch.Tensor:
    chunks = [
        vae.encode(images_to_pixels(images[start : start + batch_size])).latent_dist.mean
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) * scaling_factor


@torch.no_grad()
def _generation_embeds(tokenizer_dir: Path, images: Sequence, batch_size: int = 64) -> torch.Tensor:
    """The SEED tokenizer's generation embeddings of `images` decoded from their codes: what the decoder is fed
    at use. (Trained on the teacher's embeddings, which the generation embedding regresses at cosine ~0.93, the
    decoder preserved all five attributes in 59-68% of reconstructions.)"""
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    model = SeedTokenizerModel.from_pretrained(tokenizer_dir).eval()
    image_processor = SeedImageProcessor.from_pretrained(tokenizer_dir)
    chunks = [
        model.decode(
            model.encode(
                image_processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"]
            )
        )
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def _decoder_scheduler_config(recipe: dict[str, Any]) -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        **(recipe.get("noise_schedule") or {}),
    }


def run_decoder(run: ShapesRun, staging: Path) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    recipe = run.recipe["decoder"]
    teacher_dir, vae_dir = run.stage_dir("teacher"), run.stage_dir("vae")
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    text_encoder = load_clip_tower(str(teacher_dir), "text").eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    images = datasets.load_from_disk(str(run.stage_dir("data") / "images"))["image"]
    latents = _encode_latents(vae, images, vae.config.scaling_factor)
    embeds = _generation_embeds(run.stage_dir("tokenizer_stage2"), images)
    embedding_dim = embeds.shape[1]
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=embedding_dim)
    normalizer.mean.data.copy_(embeds.mean(0, keepdim=True))
    # floored: a collapsed codebook (the smoke schedule's few steps) gives every image the same embedding
    normalizer.std.data.copy_(embeds.std(0, keepdim=True).clamp_min(1e-6))
    with torch.no_grad():
        input_ids = tokenizer(
            "", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        prompt_embeds = text_encoder(input_ids)[0]

    set_seed(run.seed)
    unet = UNet2DConditionModel(
        sample_size=latents.shape[-1],
        in_channels=latents.shape[1],
        out_channels=latents.shape[1],
        cross_attention_dim=text_encoder.config.hidden_size,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * embedding_dim,
        **recipe["unet"],
    )
    noise_scheduler = DDPMScheduler(**_decoder_scheduler_config(recipe))
    model = UnCLIPDecoderForTraining(
        unet,
        noise_scheduler,
        prompt_embeds,
        normalizer.std.data[0],
        conditioning_dropout=recipe.get("conditioning_dropout", 0.1),
        embedding_noise=recipe.get("embedding_noise", 0.0),
    )
    train_set = datasets.Dataset.from_dict(
        {"latents": latents.numpy(), "image_embeds": embeds.numpy()}
    ).with_format("torch")
    args = TrainingArguments(
        **_training_arguments(recipe, run.checkpoint_dir("decoder"), run.seed), remove_unused_columns=False
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set)
    run.train(trainer)
    unet = trainer.accelerator.unwrap_model(trainer.model).unet.eval()
    pipeline = SeedUnCLIPPipeline(
        seed_tokenizer=None,
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DPMSolverMultistepScheduler(
            **_decoder_scheduler_config(recipe), algorithm_type="dpmsolver++"
        ),
        vae=vae,
    )
    pipeline.save_pretrained(staging)


def _tokenizer_recipe(run: ShapesRun, stage: str) -> dict[str, Any]:
    """A `seed_hf.training.tokenizer_stages` recipe from the shapes recipe's section `stage` (sizes, training)."""
    recipe = copy.deepcopy(run.recipe[stage])
    recipe["training"] = _training_arguments(recipe, run.checkpoint_dir(stage), run.seed)
    recipe["seed"] = run.seed
    return recipe


def run_tokenizer_stage1(run: ShapesRun, staging: Path) -> None:
    from transformers import AutoTokenizer

    data_dir = run.stage_dir("data")
    text_tokenizer = AutoTokenizer.from_pretrained(data_dir / "clip_tokenizer")
    recipe = _tokenizer_recipe(run, "tokenizer_stage1")
    config = recipe.pop("config")
    config["vision_config"] = {**config["vision_config"], "image_size": run.recipe["image_size"]}
    config["qformer_config"] = {**config["qformer_config"], "vocab_size": len(text_tokenizer)}
    config["generation_embedding_dim"] = run.recipe["teacher"]["projection_dim"]
    recipe["stage"] = 1
    recipe["model"] = {
        "config": config,
        "settings": recipe.pop("settings", None) or {},
        "vision_position_embedding_std": recipe.pop("vision_position_embedding_std", None),
    }
    recipe["text_tokenizer"] = str(data_dir / "clip_tokenizer")
    if recipe["model"]["settings"].get("teacher_distillation_weight"):
        recipe["teacher"] = {"pretrained": str(run.stage_dir("teacher"))}
    recipe["data"] = {
        "source": str(data_dir / "captions"),
        "max_text_length": recipe.pop("max_text_length", 32),
    }
    trainer = _train_tokenizer_stage(run, recipe, staging)
    # the whole stage-1 model (with the Q-Former's text side) measures caption -> image retrieval; the causal
    # Q-Former it holds is frozen in stage 2, so its image side stays the shipped tokenizer's
    image_text_model = staging / IMAGE_TEXT_MODEL_FOLDER
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(image_text_model)
    text_tokenizer.save_pretrained(image_text_model)


def run_tokenizer_stage2(run: ShapesRun, staging: Path) -> None:
    recipe = _tokenizer_recipe(run, "tokenizer_stage2")
    recipe["stage"] = 2
    recipe["model"] = {
        "tokenizer": str(run.stage_dir("tokenizer_stage1")),
        "settings": recipe.pop("settings", None) or {},
    }
    recipe["teacher"] = {"pretrained": str(run.stage_dir("teacher"))}
    recipe["data"] = {"source": str(run.stage_dir("data") / "images")}
    _train_tokenizer_stage(run, recipe, staging)


def _train_tokenizer_stage(run: ShapesRun, recipe: dict[str, Any], staging: Path):
    """Train a tokenizer stage and export the tokenizer into `staging`; returns the trainer."""
    from .tokenizer_stages import build_trainer

    # as `train_tokenizer` does, but exporting into the stage's staging folder
    trainer, image_processor = build_trainer(recipe)
    run.train(trainer)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    unwrapped.export_tokenizer().save_pretrained(staging)
    image_processor.save_pretrained(staging)
    (staging / "training_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    return trainer


def run_tokenized(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller: the partial folder is kept between runs so that tokenization resumes."""
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    from .tokenize_images import image_processor_for, tokenize_images

    tokenizer_dir = run.stage_dir("tokenizer_stage2")
    model = SeedTokenizerModel.from_pretrained(tokenizer_dir).eval()
    image_processor = image_processor_for(str(tokenizer_dir), model.config)
    partial = run.checkpoint_dir("tokenized")
    batch_size = (run.recipe.get("tokenized") or {}).get("batch_size", 64)
    data_dir = run.stage_dir("data")
    tokenize_images(
        str(data_dir / "captions"), model, image_processor, partial / "captions", batch_size=batch_size
    )
    tokenize_images(
        str(data_dir / "chat"),
        model,
        image_processor,
        partial / "chat",
        image_column="images",
        batch_size=batch_size,
    )
    os.replace(partial, target)


def run_llm_init(run: ShapesRun, staging: Path) -> None:
    from transformers import AutoTokenizer, set_seed

    from seed_hf.modeling.configuration_seed_llama import SeedLlamaConfig
    from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
    from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor

    tokenizer = AutoTokenizer.from_pretrained(run.stage_dir("data") / "llm_tokenizer")
    tokens_per_image = run.recipe["tokenizer_stage1"]["config"].get("num_query_tokens", 32)
    layout = SeedImageTokenLayout.from_tokenizer(tokenizer, tokens_per_image)
    config = SeedLlamaConfig(
        # the `<image>` placeholder lies past the vocabulary, as in converted releases: it is never embedded
        vocab_size=layout.eoi_token_id + 1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_image_codes=layout.num_image_codes,
        tokens_per_image=tokens_per_image,
        image_code_start_id=layout.image_code_start_id,
        boi_token_id=layout.boi_token_id,
        eoi_token_id=layout.eoi_token_id,
        image_placeholder_id=layout.image_placeholder_id,
        **run.recipe["llm"]["config"],
    )
    set_seed(run.seed)
    SeedLlamaForCausalLM(config).save_pretrained(staging)
    image_processor = SeedImageProcessor.from_pretrained(run.stage_dir("tokenizer_stage2"))
    SeedLlamaProcessor(image_processor, tokenizer, tokens_per_image=tokens_per_image).save_pretrained(staging)


def _llm_recipe(run: ShapesRun, stage: str, model_dir: Path, train_files: list[Path]):
    from .llm_training import LlmRecipe

    values = copy.deepcopy(run.recipe["llm"][stage])
    values.setdefault("data_seed", run.seed)
    return LlmRecipe(
        **{
            **values,
            "model_name_or_path": str(model_dir),
            "output_dir": str(run.checkpoint_dir(f"llm_{stage}")),
            "train_files": [str(path) for path in train_files],
            "training": {**_TRAINING_DEFAULTS, "seed": run.seed, **(values.get("training") or {})},
        }
    )


def _train_llm(run: ShapesRun, recipe, staging: Path) -> None:
    from .llm_training import build_trainer

    trainer = build_trainer(recipe)
    run.train(trainer)
    trainer.model.config.use_cache = True  # the saved model is for inference again
    trainer.save_model(str(staging))


def run_llm_lora(run: ShapesRun, staging: Path) -> None:
    recipe = _llm_recipe(run, "lora", run.stage_dir("llm_init"), [run.stage_dir("tokenized") / "captions"])
    _train_llm(run, recipe, staging)


def run_llm_merged(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller: `merge_lora` writes its folder atomically itself."""
    from .llm_training import merge_lora

    merge_lora(str(run.stage_dir("llm_init")), str(run.stage_dir("llm_lora")), target)


def run_llm_full(run: ShapesRun, staging: Path) -> None:
    recipe = _llm_recipe(run, "full", run.stage_dir("llm_merged"), [run.stage_dir("tokenized") / "captions"])
    _train_llm(run, recipe, staging)


def run_llm_sft(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller: a full SFT is saved through a staging folder, a LoRA one merged atomically."""
    from .llm_training import merge_lora

    recipe = _llm_recipe(run, "sft", run.stage_dir("llm_full"), [run.stage_dir("tokenized") / "chat"])
    if recipe.stage == "full":
        with staged_directory(target) as staging:
            _train_llm(run, recipe, staging)
        return
    adapter_dir = run.checkpoint_dir("llm_sft") / "adapter"
    if not adapter_dir.exists():
        with staged_directory(adapter_dir) as staging:
            _train_llm(run, recipe, staging)
    merge_lora(str(run.stage_dir("llm_full")), str(adapter_dir), target)


def set_shapes_inference_defaults(model, detokenizer) -> None:
    """Give the SEED-Shapes LLM and de-tokenizer their recommended inference settings, saved with them."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        **SHAPES_SAMPLING,
        max_new_tokens=model.config.tokens_per_image + SHAPES_ANSWER_TOKENS,
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    detokenizer.register_to_config(**SHAPES_DECODER_DEFAULTS)


def run_seed_shapes(run: ShapesRun, staging: Path) -> None:
    """The shipped layout (`save_seed_checkpoint`) with the SEED-Shapes inference defaults and an example image. The
    stage-1 image-text model that the evaluation's retrieval figures need stays in `tokenizer_stage1/` (no Auto
    class loads it, so it is not part of the checkpoint)."""
    from transformers import AutoProcessor

    from seed_hf.checkpoint import save_seed_checkpoint
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    llm_dir = run.stage_dir("llm_sft")
    model = SeedLlamaForCausalLM.from_pretrained(llm_dir)
    detokenizer = SeedUnCLIPPipeline.from_pretrained(run.stage_dir("decoder"))
    set_shapes_inference_defaults(model, detokenizer)
    save_seed_checkpoint(
        staging,
        model=model,
        processor=AutoProcessor.from_pretrained(llm_dir),
        visual_tokenizer=SeedTokenizerModel.from_pretrained(run.stage_dir("tokenizer_stage2")),
        detokenizer=detokenizer,
    )
    # the main job's example image (a seen combination)
    shapes.render(EXAMPLE_ATTRIBUTES).save(staging / EXAMPLE_IMAGE_FILE)
    times = run.output_dir / STAGE_TIMES_FILE
    if times.is_file():  # for the model card
        shutil.copyfile(times, staging / TRAINING_TIMES_FILE)


# stage -> (function, whether the function gets a staging folder (True) or the target, writing it atomically itself)
_STAGE_FUNCTIONS: dict[str, tuple[Callable[[ShapesRun, Path], None], bool]] = {
    "data": (run_data, True),
    "teacher": (run_teacher, True),
    "vae": (run_vae, True),
    "decoder": (run_decoder, True),
    "tokenizer_stage1": (run_tokenizer_stage1, True),
    "tokenizer_stage2": (run_tokenizer_stage2, True),
    "tokenized": (run_tokenized, False),
    "llm_init": (run_llm_init, True),
    "llm_lora": (run_llm_lora, True),
    "llm_merged": (run_llm_merged, False),
    "llm_full": (run_llm_full, True),
    "llm_sft": (run_llm_sft, False),
    "seed_shapes": (run_seed_shapes, True),
}


class RunInterrupted(KeyboardInterrupt):
    """Raised in `train-shapes` by SIGTERM or SIGINT, so that the run unwinds (cleans up) as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> None:
    raise RunInterrupted(signum)


def _record_time(output_dir: Path, stage: str, seconds: float) -> None:
    path = output_dir / STAGE_TIMES_FILE
    # processes running independent chains of one run share the file: read-modify-write under a lock
    lock_path = output_dir / CHECKPOINTS_FOLDER / f"{STAGE_TIMES_FILE}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(path.read_text()) if path.exists() else {}
        times[stage] = round(times.get(stage, 0.0) + seconds, 1)
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        temporary.write_text(json.dumps(times, indent=2))
        os.replace(temporary, path)


def _selected_stages(stages: Sequence[str] | None) -> tuple[str, ...]:
    selected = STAGES if stages is None else tuple(stages)
    if unknown := [stage for stage in selected if stage not in STAGES]:
        raise ValueError(f"unknown stages {unknown}; the stages are {list(STAGES)}")
    return selected


def _missing_inputs_error(stage: str, missing: list[str]) -> ValueError:
    return ValueError(f"stage {stage!r} needs the output of {missing} first (run those stages)")


def train_shapes(
    output_dir: str | os.PathLike,
    schedule: str | dict[str, Any] = "full",
    stages: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
) -> dict[str, str]:
    """
    Run the SEED-Shapes stages (see the module docstring) into `output_dir`.

    Args:
        output_dir: the run's folder; each stage writes `output_dir/<stage>`.
        schedule: `"smoke"`, `"full"`, a recipe path, or a recipe mapping.
        stages: the stages to run (default: all), in the run's order whatever the order given; each needs the
            folders of its `STAGE_INPUTS`.
        overrides: `"dotted.key=value"` recipe overrides (ignored for a recipe mapping).
        callbacks: `TrainerCallback`s added to every `Trainer` of the run.

    Returns:
        `{stage: "skipped" | "done"}` for the stages asked for.
    """
    recipe = (
        copy.deepcopy(schedule) if isinstance(schedule, dict) else load_shapes_recipe(schedule, overrides)
    )
    selected = _selected_stages(stages)
    if recipe.get("num_threads"):
        # More OpenMP threads than free cores stall every parallel region: on the shared 2-core machine a UNet step
        # took 10 s with 2 threads and 0.75 s with 1.
        torch.set_num_threads(int(recipe["num_threads"]))
    run = ShapesRun(Path(output_dir), recipe, tuple(callbacks))
    run.output_dir.mkdir(parents=True, exist_ok=True)
    outcome = {}
    for stage in STAGES:
        if stage not in selected:
            continue
        target = run.stage_dir(stage)
        if target.exists():
            outcome[stage] = "skipped"
            continue
        missing = [before for before in STAGE_INPUTS[stage] if not run.stage_dir(before).exists()]
        if missing:
            raise _missing_inputs_error(stage, missing)
        function, staged = _STAGE_FUNCTIONS[stage]
        logger.info("train-shapes: stage %s", stage)
        start = time.perf_counter()
        try:
            if staged:
                with staged_directory(target) as staging:
                    function(run, staging)
            else:
                function(run, target)
        finally:
            # an interrupted stage resumes from its checkpoints, so the time it spent counts towards the stage
            _record_time(run.output_dir, stage, time.perf_counter() - start)
        outcome[stage] = "done"
    return outcome


def longest_stage_chain(stage_times: dict[str, float]) -> tuple[list[str], float]:
    """The chain of dependent stages (`STAGE_INPUTS`) with the largest summed time: the wall time of a run whose
    independent stages run side by side. `--jobs 2` comes within seconds of it: only the short `tokenized` and
    `llm_init` ever make a third independent stage. Stages without a time count as 0 s."""
    finish: dict[str, tuple[float, list[str]]] = {}
    for stage in STAGES:  # STAGES lists every stage after its inputs
        before = max((finish[name] for name in STAGE_INPUTS[stage]), default=(0.0, []))
        finish[stage] = (before[0] + stage_times.get(stage, 0.0), [*before[1], stage])
    seconds, chain = max(finish.values())
    return chain, seconds


def train_shapes_in_parallel(
    output_dir: str | os.PathLike,
    schedule: str = "full",
    stages: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    jobs: int = 2,
    num_threads: int = 1,
    poll_seconds: float = 1.0,
) -> dict[str, str]:
    """
    Run the stages as [`train_shapes`] does, but up to `jobs` at once: each stage in its own process with
    `num_threads` torch threads, as soon as the stages of its `STAGE_INPUTS` are done (on 2 cores: the VAE beside
    the teacher and tokenizer, then the decoder beside the LLM chain). A stage's output goes to
    `output_dir/logs/<stage>.log`.

    Returns:
        `{stage: "skipped" | "done"}` for the stages asked for. Raises `RuntimeError` naming the log of a stage
        that failed, after the stages still running have finished.
    """
    for name, value in (("jobs", jobs), ("num_threads", num_threads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    selected = _selected_stages(stages)
    output_dir = Path(output_dir)
    log_dir = output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcome = {stage: "skipped" for stage in STAGES if stage in selected and (output_dir / stage).exists()}
    waiting = [stage for stage in STAGES if stage in selected and stage not in outcome]
    for stage in waiting:
        missing = [
            before
            for before in STAGE_INPUTS[stage]
            if before not in waiting and not (output_dir / before).exists()
        ]
        if missing:
            raise _missing_inputs_error(stage, missing)
    running: dict[str, subprocess.Popen] = {}
    failed: list[str] = []
    command = [
        sys.executable,
        "-m",
        "seed_hf.training.shapes_training",
        "--output-dir",
        str(output_dir),
        "--schedule",
        str(schedule),
    ]
    command += [f"--set={override}" for override in overrides] + [
        "--num-threads",
        str(num_threads),
        "--stages",
    ]
    try:
        _schedule_stages(waiting, running, failed, outcome, command, log_dir, jobs, poll_seconds)
    except BaseException:
        # interrupted (`RunInterrupted`, KeyboardInterrupt) or failed here: no stage outlives the run; each one
        # removes its staging folder and records its time on SIGTERM
        for process in running.values():
            process.terminate()
        for process in running.values():
            process.wait()
        raise
    if failed:
        logs = ", ".join(str(log_dir / f"{stage}.log") for stage in failed)
        raise RuntimeError(f"stages {failed} failed; see {logs}")
    return {stage: outcome[stage] for stage in STAGES if stage in outcome}


def _schedule_stages(
    waiting: list[str],
    running: dict[str, subprocess.Popen],
    failed: list[str],
    outcome: dict[str, str],
    command: list[str],
    log_dir: Path,
    jobs: int,
    poll_seconds: float,
) -> None:
    """[`train_shapes_in_parallel`]'s loop: start each waiting stage once its inputs are done, `jobs` at most."""
    from tqdm.auto import tqdm

    with tqdm(total=len(waiting), desc="train-shapes stages", unit="stage") as progress:
        while waiting or running:
            for stage, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[stage]
                if process.returncode:
                    failed.append(stage)
                else:
                    outcome[stage] = "done"
                    progress.update()
            if not failed:
                for stage in list(waiting):
                    if len(running) >= jobs:
                        break
                    if any(before in running or before in waiting for before in STAGE_INPUTS[stage]):
                        continue
                    waiting.remove(stage)
                    with open(log_dir / f"{stage}.log", "a") as log:
                        running[stage] = subprocess.Popen(
                            command + [stage], stdout=log, stderr=subprocess.STDOUT
                        )
                    progress.set_postfix_str(", ".join(running))
            elif not running:
                break
            time.sleep(poll_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf train-shapes`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf train-shapes", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", required=True, help="the run's folder (stages already in it are skipped)"
    )
    parser.add_argument("--schedule", default="full", help="smoke, full, or a recipe file (default: full)")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the recipe's num_threads, else torch's; 1 per process with --jobs); "
        "use 1 on a busy machine",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        default=None,
        choices=STAGES,
        metavar="STAGE",
        help=f"stages to run (default: all): {', '.join(STAGES)}",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set decoder.training.max_steps=10 (repeatable)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="stages run at once, each in its own process once its inputs are done (default: 1; 2 on a "
        "2-core machine)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    # SIGTERM (and SIGINT) unwind the run as an exception would: staging folders removed, stage times recorded,
    # stage processes of `--jobs` terminated; the exit status is then the shell's 128 + signal number
    handlers = {
        signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        if args.jobs > 1:
            outcome = train_shapes_in_parallel(
                args.output_dir, args.schedule, args.stages, args.overrides, args.jobs, args.num_threads or 1
            )
        else:
            overrides = args.overrides + ([f"num_threads={args.num_threads}"] if args.num_threads else [])
            outcome = train_shapes(args.output_dir, args.schedule, args.stages, overrides)
    except RunInterrupted as interruption:
        logger.warning("train-shapes: stopped by %s", signal.Signals(interruption.signum).name)
        return 128 + interruption.signum
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    for stage, status in outcome.items():
        print(f"{stage:18s} {status}")
    times_path = Path(args.output_dir) / STAGE_TIMES_FILE
    if times_path.exists():
        print(f"stage wall times (s): {times_path.read_text()}")
    return 0


__all__ = [
    "AutoencoderKLForTraining",
    "STAGES",
    "UnCLIPDecoderForTraining",
    "build_chat_records",
    "load_shapes_recipe",
    "longest_stage_chain",
    "main",
    "train_clip_tokenizer",
    "train_llm_tokenizer",
    "train_shapes",
    "train_shapes_in_parallel",
]


if __name__ == "__main__":
    raise SystemExit(main())
