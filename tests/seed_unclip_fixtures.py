"""Tiny random de-tokenizer components for tests (no Hub access): unCLIP UNet, VAE, CLIP text side, SEED tokenizer."""

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from seed_llama_fixtures import (
    build_tiny_processor,
    build_tiny_seed_llama,
    build_tiny_tokenizer,
    build_tiny_visual_tokenizer,
    tiny_visual_tokenizer_config,
)
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# generation embedding of the tiny SEED tokenizer = unCLIP image embedding size
EMBEDDING_DIM = tiny_visual_tokenizer_config().generation_embedding_dim
TEXT_WIDTH = 16
TEXT_LENGTH = 8
IMAGE_SIZE = 16  # pixels; the VAE halves it once


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single bytes (no merges): every text tokenizes, one token per character."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(f"{char}</w>" for char in alphabet)]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=TEXT_LENGTH
    )


def tiny_unclip_components(seed: int = 0) -> dict:
    """The unCLIP components of a stable-diffusion-2-1-unclip folder, tiny and random (no image encoder)."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=TEXT_LENGTH,
            projection_dim=TEXT_WIDTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4),
        cross_attention_dim=TEXT_WIDTH,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * EMBEDDING_DIM,
        use_linear_projection=True,
        upcast_attention=True,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=IMAGE_SIZE,
    ).eval()
    image_normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBEDDING_DIM)
    # random statistics so that normalisation is not the identity
    image_normalizer.mean.data.normal_()
    image_normalizer.std.data.uniform_(0.5, 1.5)
    return {
        "image_normalizer": image_normalizer,
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "unet": unet,
        # the stable-diffusion-2-1-unclip scheduler
        "scheduler": DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="v_prediction",
            set_alpha_to_one=False,
            steps_offset=1,
            clip_sample=False,
        ),
        "vae": vae,
    }


def tiny_seed_unclip_pipeline(seed: int = 0):
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    pipe = SeedUnCLIPPipeline(
        seed_tokenizer=build_tiny_visual_tokenizer(seed), **tiny_unclip_components(seed)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_seed_checkpoint(folder, seed: int = 0) -> str:
    """A complete tiny random SEED checkpoint (LLM + processor, visual tokenizer, de-tokenizer) that
    `pipeline("seed-text-to-image", model=folder)` and `pipeline("seed-image-to-text", model=folder)` load."""
    from seed_hf.checkpoint import save_seed_checkpoint
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    tokenizer = build_tiny_tokenizer()
    save_seed_checkpoint(
        folder,
        model=build_tiny_seed_llama(tokenizer, seed=seed),
        processor=build_tiny_processor(tokenizer),
        visual_tokenizer=build_tiny_visual_tokenizer(seed=seed),
        detokenizer=SeedUnCLIPPipeline(seed_tokenizer=None, **tiny_unclip_components(seed)),
    )
    return str(folder)
