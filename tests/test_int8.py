"""Int8 weight-only SEED-LLaMA and visual tokenizer through transformers' quantization config (torchao), on the
shipped SEED-Shapes checkpoint: quantized loading, save -> load round trips (bit-identical outputs), generation and
drawing with the quantized components, and the visual tokenizer's codes against bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torchao = pytest.importorskip(
    "torchao", reason="int8 weight-only needs torchao (pip install 'seed-hf[int8]')"
)

from torchao.quantization import Int8Tensor, Int8WeightOnlyConfig  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoProcessor,
    TorchAoConfig,
    pipeline,
)

import seed_hf  # noqa: E402, F401
from seed_hf.training.shapes import caption_dataset  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
VISUAL_TOKENIZER = MODEL / "visual_tokenizer"


def int8_config() -> TorchAoConfig:
    return TorchAoConfig(Int8WeightOnlyConfig())


@pytest.fixture(scope="module")
def int8_llm():
    return AutoModelForCausalLM.from_pretrained(
        MODEL, dtype=torch.bfloat16, quantization_config=int8_config()
    )


@pytest.fixture(scope="module")
def int8_visual_tokenizer():
    return AutoModel.from_pretrained(
        VISUAL_TOKENIZER, dtype=torch.bfloat16, quantization_config=int8_config()
    )


@pytest.fixture(scope="module")
def shapes_pixel_values():
    images = list(caption_dataset("test_seen", num_samples=100, seed=0)["image"])
    pixel_values = AutoImageProcessor.from_pretrained(VISUAL_TOKENIZER)(
        images, return_tensors="pt"
    ).pixel_values
    return pixel_values.to(torch.bfloat16)


def _prompt(model) -> dict:
    processor = AutoProcessor.from_pretrained(MODEL)
    return processor.apply_chat_template(
        [{"role": "user", "content": "a small red circle at the top left on a white background"}],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )


def _quantized_names(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if isinstance(parameter.data, Int8Tensor)}


def test_int8_llm_quantizes_the_decoder_linears_only(int8_llm):
    linear_weights = {
        f"{name}.weight"
        for name, module in int8_llm.model.layers.named_modules(prefix="model.layers")
        if isinstance(module, torch.nn.Linear)
    }
    assert _quantized_names(int8_llm) == linear_weights and len(linear_weights) == 7 * 4
    # the embeddings and the LM head stay bf16: the image-token slice of the head is read from a plain weight
    assert type(int8_llm.get_input_embeddings().weight.data) is torch.Tensor
    assert type(int8_llm.lm_head.weight.data) is torch.Tensor
    assert int8_llm.config.quantization_config.quant_method == "torchao"


def test_int8_llm_logits_stay_close_to_bf16(int8_llm):
    bf16 = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16)
    inputs = _prompt(int8_llm)
    with torch.no_grad():
        logits = int8_llm(**inputs).logits.float()
        reference = bf16(**inputs).logits.float()
    assert (logits - reference).norm() / reference.norm() < 0.05
    assert torch.equal(logits[0, -1].argmax(), reference[0, -1].argmax())


def test_int8_llm_save_load_round_trip_is_identical(int8_llm, tmp_path):
    int8_llm.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert _quantized_names(loaded) == _quantized_names(int8_llm)
    inputs = _prompt(int8_llm)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, int8_llm(**inputs).logits)
    greedy = {"force_image": True, "do_sample": False, "max_new_tokens": 40}
    sequences = int8_llm.generate(**inputs, **greedy)
    assert torch.equal(loaded.generate(**inputs, **greedy), sequences)
    new = sequences[0, inputs["input_ids"].shape[1] :]
    layout = int8_llm.image_token_layout
    assert new[0] == int8_llm.config.boi_token_id and new[33] == int8_llm.config.eoi_token_id
    assert bool(layout.is_code(new[1:33]).all())


def test_int8_visual_tokenizer_round_trip_is_identical(int8_visual_tokenizer, shapes_pixel_values, tmp_path):
    linears = {
        f"{name}.weight"
        for name, module in int8_visual_tokenizer.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    quantized = _quantized_names(int8_visual_tokenizer)
    assert quantized and quantized <= linears
    assert int8_visual_tokenizer.get_input_embeddings() is int8_visual_tokenizer.codebook
    assert type(int8_visual_tokenizer.codebook.weight.data) is torch.Tensor
    # saved as safetensors with parameters on the root module (query_tokens), which torchao's loader must skip
    int8_visual_tokenizer.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert _quantized_names(loaded) == quantized
    assert torch.equal(loaded.query_tokens, int8_visual_tokenizer.query_tokens)
    pixel_values = shapes_pixel_values[:8]
    with torch.no_grad():
        codes = int8_visual_tokenizer.encode(pixel_values)
        assert torch.equal(loaded.encode(pixel_values), codes)
        assert torch.equal(loaded.decode(codes), int8_visual_tokenizer.decode(codes))


def test_int8_visual_tokenizer_codes_match_bf16(int8_visual_tokenizer, shapes_pixel_values):
    bf16 = AutoModel.from_pretrained(VISUAL_TOKENIZER, dtype=torch.bfloat16)
    with torch.no_grad():
        codes = int8_visual_tokenizer.encode(shapes_pixel_values)
        reference = bf16.encode(shapes_pixel_values)
    assert codes.shape == reference.shape == (100, 32)
    assert (codes == reference).float().mean() >= 0.95


def test_text_to_image_draws_with_the_int8_components(int8_llm, int8_visual_tokenizer):
    int8_llm.set_visual_tokenizer(int8_visual_tokenizer)
    try:
        drawer = pipeline(
            "seed-text-to-image", model=int8_llm, processor=AutoProcessor.from_pretrained(MODEL)
        )
        assert drawer.detokenizer.seed_tokenizer is int8_visual_tokenizer
        output = drawer(
            "a large blue square in the center on a black background", seed=0, num_inference_steps=2
        )
    finally:
        int8_llm.set_visual_tokenizer(None)
    assert len(output["images"]) == 1 and output["images"][0].size == (64, 64)
    assert output["image_codes"][0].shape == (32,)
