"""Bad inputs to the models get a clear error naming the argument, never a silent wrong result or a deep crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from seed_llama_fixtures import build_tiny_seed_llama, build_tiny_tokenizer, build_tiny_visual_tokenizer

import seed_hf  # noqa: F401

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"


@pytest.fixture(scope="module")
def model():
    return build_tiny_seed_llama(build_tiny_tokenizer())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixel_values_are_refused(bad):
    tokenizer = build_tiny_visual_tokenizer()
    size = tokenizer.config.image_size
    pixel_values = torch.zeros(1, 3, size, size)
    pixel_values[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="pixel_values must be finite"):
        tokenizer.encode(pixel_values)


@pytest.mark.parametrize("token_id", [-1, 10_000])
def test_token_ids_outside_the_vocabulary_are_refused(model, token_id):
    ids = torch.tensor([[1, 5, token_id, 7]])
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, "):
        model(ids)


def test_force_image_with_the_image_start_suppressed_is_refused(model):
    ids = torch.tensor([[1, 5, 6, 7]])
    with pytest.raises(ValueError, match="suppress_tokens forbids"):
        model.generate(ids, force_image=True, suppress_tokens=[model.config.boi_token_id], max_new_tokens=40)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -2.0])
def test_bad_image_guidance_scales_are_refused(model, scale):
    ids = torch.tensor([[1, 5, 6, 7]])
    with pytest.raises(ValueError, match="image_guidance_scale must be a positive finite number"):
        model.generate(ids, image_guidance_scale=scale, max_new_tokens=4)


@pytest.mark.parametrize("part", [".", "visual_tokenizer"])
def test_truncated_weights_name_the_checkpoint(tmp_path, part):
    from transformers import AutoModel

    copy = shutil.copytree(SHIPPED, tmp_path / "seed-shapes")
    weights = copy / part / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match="truncated or corrupt"):
        AutoModel.from_pretrained(copy / part)
