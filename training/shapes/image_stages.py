"""`train-shapes` stages `teacher` (CLIP), `vae` and `decoder` (the unCLIP UNet): image models trained on the `Trainer`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..tokenizer_stages import load_clip_tower
from .recipe import ShapesDecoderArguments
from .run import ShapesRun, shapes_image_processor, trainer_arguments


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


def run_teacher(run: ShapesRun, staging: Path) -> None:
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, Trainer, TrainingArguments, set_seed

    from ..data import ImageTextCollator, load_image_caption_dataset

    recipe = run.recipe.teacher
    data_dir = run.stage_dir("data")
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "clip_tokenizer")
    image_size = run.recipe.image_size
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = CLIPConfig(
        text_config={
            **recipe.text_config,
            "vocab_size": len(tokenizer),
            "projection_dim": recipe.projection_dim,
            **special,
        },
        # the vision tower also loads alone, as the stage-2 teacher (`CLIPVisionModelWithProjection`)
        vision_config={
            **recipe.vision_config,
            "image_size": image_size,
            "projection_dim": recipe.projection_dim,
        },
        projection_dim=recipe.projection_dim,
    )
    set_seed(run.seed)
    model = CLIPModel(config)
    if std := recipe.vision_position_embedding_std:
        # as for the tokenizer's ViT (see `tokenizer_stages`): CLIP's 0.02 leaves position all but unread
        nn.init.normal_(model.vision_model.embeddings.position_embedding.weight, std=std)
    image_processor = shapes_image_processor(image_size)
    text_collator = ImageTextCollator(
        image_processor, tokenizer, recipe.text_config["max_position_embeddings"]
    )
    args = TrainingArguments(
        **trainer_arguments(recipe.training, run.checkpoint_dir("teacher"), run.seed),
        remove_unused_columns=False,
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

    recipe = run.recipe.vae
    set_seed(run.seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, sample_size=run.recipe.image_size, **recipe.config)
    model = AutoencoderKLForTraining(vae, kl_weight=recipe.kl_weight, l1_weight=recipe.l1_weight)
    images = datasets.load_from_disk(str(run.stage_dir("data") / "images"))
    args = TrainingArguments(
        **trainer_arguments(recipe.training, run.checkpoint_dir("vae"), run.seed), remove_unused_columns=False
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


def _decoder_scheduler_config(recipe: ShapesDecoderArguments) -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        **recipe.noise_schedule,
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

    recipe = run.recipe.decoder
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
        **recipe.unet,
    )
    noise_scheduler = DDPMScheduler(**_decoder_scheduler_config(recipe))
    model = UnCLIPDecoderForTraining(
        unet,
        noise_scheduler,
        prompt_embeds,
        normalizer.std.data[0],
        conditioning_dropout=recipe.conditioning_dropout,
        embedding_noise=recipe.embedding_noise,
    )
    train_set = datasets.Dataset.from_dict(
        {"latents": latents.numpy(), "image_embeds": embeds.numpy()}
    ).with_format("torch")
    args = TrainingArguments(
        **trainer_arguments(recipe.training, run.checkpoint_dir("decoder"), run.seed),
        remove_unused_columns=False,
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
