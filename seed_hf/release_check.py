"""The checks of `seed-hf convert-release` ([`~seed_hf.convert_release`]): the converted SEED tokenizer against
the authors' reference outputs, the converted LLM against the release LLaMA's logits, and the written folder loaded
the way users load it (the LLM answers a prompt with an image, the de-tokenizer draws). Each returns the evidence
that goes into the model card.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seed_hf.release_fetch import ReleaseConversionError, argument_label

# Tiny de-tokenizer check: denoising steps.
CHECK_INFERENCE_STEPS = 2
# Bound on the LLM logits change when the weights keep their dtype (the conversion copies them).
LLM_PARITY_TOLERANCE = 1e-4
LLM_PARITY_KEY = "LLM logits, release LLaMA vs converted SEED-LLaMA (max-abs)"


def _check_image(size: int):
    """A deterministic RGB test card (gradients and a square), `size` x `size`."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(
        (np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 96.0)), axis=-1
    )
    quarter = max(size // 4, 1)
    pixels[quarter : 3 * quarter, quarter : 3 * quarter] = (230.0, 40.0, 40.0)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def tokenizer_parity(model, reference: Path) -> dict[str, str]:
    """Codes and generation embeddings of the converted tokenizer on the authors' reference inputs/outputs."""
    from safetensors.torch import load_file

    inputs = load_file(str(reference / "inputs.safetensors"))
    expected = load_file(str(reference / "expected.safetensors"))
    with torch.no_grad():
        output = model(inputs["pixel_values"].to(model.dtype), return_generation_embeddings=True)
    codes = output.image_codes.cpu()
    if codes.shape != expected["codes"].shape:
        raise ReleaseConversionError(
            f"the converted SEED tokenizer gives codes of shape {tuple(codes.shape)} on {argument_label('tokenizer_reference')}, "
            f"the reference {tuple(expected['codes'].shape)}"
        )
    equal = int((codes == expected["codes"]).sum())
    if equal != codes.numel():
        raise ReleaseConversionError(
            f"the converted SEED tokenizer reproduces {equal} of {codes.numel()} reference codes "
            f"({argument_label('tokenizer_reference')}): the conversion does not match the authors' model"
        )
    parity = {
        "tokenizer codes vs the authors' reference outputs": f"{equal}/{codes.numel()} codes identical to the authors' reference outputs "
        f"({codes.shape[0]} images, {reference.name})"
    }
    if "generation_embeds_from_codes" in expected:
        difference = (
            output.generation_embeddings.float().cpu() - expected["generation_embeds_from_codes"]
        ).abs()
        parity["tokenizer generation embeddings vs the authors' reference (max-abs)"] = (
            f"{difference.max().item():.3g}"
        )
    return parity


def parity_prompt_ids(tokenizer, num_codes: int, tokens_per_image: int) -> torch.LongTensor:
    """Ids of a prompt holding text and one image (`<img>` + codes + `</img>`), read with the release tokenizer."""
    codes = "".join(f"<img_{(7 * i + 3) % num_codes:05d}>" for i in range(tokens_per_image))
    text = f"USER: What is in this picture? <img>{codes}</img> ASSISTANT: A small test card."
    return tokenizer(text, return_tensors="pt").input_ids


def check_folder(
    folder: Path,
    parity_ids: torch.LongTensor,
    reference_logits: torch.Tensor | None,
    *,
    strict_llm_parity: bool,
) -> dict[str, str]:
    """Load the written folder the way users will and exercise every part; return the evidence."""
    from transformers import AutoModel, AutoProcessor

    from seed_hf.checkpoint import DETOKENIZER_FOLDER, VISUAL_TOKENIZER_FOLDER
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    evidence: dict[str, str] = {}
    try:
        model = AutoModel.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        visual_tokenizer = AutoModel.from_pretrained(folder / VISUAL_TOKENIZER_FOLDER).eval()
    except Exception as error:
        raise ReleaseConversionError(
            f"the converted folder does not load: {type(error).__name__}: {error}"
        ) from error
    if (
        type(model).__name__ != "SeedLlamaForCausalLM"
        or type(visual_tokenizer).__name__ != "SeedTokenizerModel"
    ):
        raise ReleaseConversionError(
            f"the converted folder loads as {type(model).__name__} + {type(visual_tokenizer).__name__}, expected "
            "SeedLlamaForCausalLM + SeedTokenizerModel"
        )

    # the LLM reads a prompt with an image (pixels -> codes through the visual tokenizer)
    image = _check_image(visual_tokenizer.config.image_size)
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is in this picture?"},
            ],
        }
    ]
    try:
        inputs = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            logits = model(**inputs).logits
            codes = visual_tokenizer.encode(inputs["pixel_values"].to(visual_tokenizer.dtype))
    except Exception as error:
        raise ReleaseConversionError(
            f"the converted LLM fails on a prompt with an image: {type(error).__name__}: {error}"
        ) from error
    if not torch.isfinite(logits).all():
        raise ReleaseConversionError("the converted LLM gives non-finite logits on a prompt with an image")
    evidence["LLM on a prompt with an image"] = (
        f"processor chat template with one image -> {inputs['input_ids'].shape[1]} tokens, finite logits"
    )

    if reference_logits is not None:
        with torch.no_grad():
            converted = model(parity_ids).logits.float()
        difference = (converted - reference_logits).abs().max().item()
        if strict_llm_parity and difference > LLM_PARITY_TOLERANCE:
            raise ReleaseConversionError(
                f"the converted LLM's logits differ from the release LLaMA's by {difference:.3g} (max-abs) on the "
                f"same ids; the conversion must keep the weights"
            )
        evidence[LLM_PARITY_KEY] = f"{difference:.3g} on {parity_ids.shape[1]} tokens (text and one image)"
    del model

    # the de-tokenizer draws the check image's codes
    try:
        detokenizer = SeedUnCLIPPipeline.from_pretrained(
            folder / DETOKENIZER_FOLDER, seed_tokenizer=visual_tokenizer, dtype=visual_tokenizer.dtype
        )
        detokenizer.set_progress_bar_config(disable=True)
        # smallest size the VAE and the UNet's down-sampling accept
        side = detokenizer.vae_scale_factor * 2 ** (len(detokenizer.unet.config.block_out_channels) - 1)
        drawn = detokenizer(
            image_codes=codes,
            num_inference_steps=CHECK_INFERENCE_STEPS,
            height=side,
            width=side,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images
    except Exception as error:
        raise ReleaseConversionError(
            f"the converted de-tokenizer fails to draw: {type(error).__name__}: {error}"
        ) from error
    if drawn.shape[0] != 1 or not bool(torch.isfinite(torch.as_tensor(drawn)).all()):
        raise ReleaseConversionError(f"the converted de-tokenizer drew {drawn.shape} with non-finite values")
    evidence["de-tokenizer drawing from codes"] = (
        f"1 image of {side}x{side} from {codes.shape[1]} codes in {CHECK_INFERENCE_STEPS} steps, finite"
    )
    return evidence


__all__ = ["LLM_PARITY_KEY", "check_folder", "parity_prompt_ids", "tokenizer_parity"]
