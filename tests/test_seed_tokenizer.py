"""SeedTokenizerModel: parity with the authors' code, conversion, causality, round trips, input checks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from seed_llama_fixtures import tiny_visual_tokenizer_config

from seed_hf.convert import (
    ConversionError,
    config_from_reference_schema,
    convert_reference_fixture,
    convert_seed_tokenizer,
    convert_state_dict,
    infer_config,
    load_reference_state_dict,
)
from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

BUNDLED_FIXTURES = Path(__file__).parent / "fixtures" / "seed-reference"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "seed-reference"
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def _fixture_folders() -> list[Path]:
    """Every fixture folder bundled with the tests plus every one under ../shared (new sizes may appear)."""
    folders = {}
    for root in (BUNDLED_FIXTURES, SHARED_FIXTURES):
        for config in sorted(root.rglob("config.json")) if root.exists() else []:
            folders.setdefault(f"{config.parent.parent.name}/{config.parent.name}", config.parent)
    return list(folders.values())


FIXTURES = _fixture_folders()


def test_fixtures_are_found():
    assert {folder.name for folder in FIXTURES} >= {"tiny-a", "small-b"}


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize("folder", FIXTURES, ids=[f"{f.parent.name}/{f.name}" for f in FIXTURES])
def test_parity_with_reference(folder, attn_implementation):
    model = convert_reference_fixture(folder)
    model.set_attn_implementation(attn_implementation)
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected = load_file(str(folder / "expected.safetensors"))
    with torch.no_grad():
        output = model(inputs["pixel_values"], return_generation_embeddings=True)
        actual = {
            "image_embeds": output.image_embeds,
            "query_output": output.causal_embeddings,
            "query_output_up": model.upsample_codes(expected["codes"]),
            "generation_embeds_from_codes": output.generation_embeddings,
            "generation_embeds_for_decode": model.decode(inputs["codes_for_decode"]),
            "recon_causal_embeds": model.reconstruct_causal_embeddings(expected["codes"]),
        }
    assert output.image_codes.dtype == torch.int64
    assert torch.equal(output.image_codes, expected["codes"])
    assert torch.equal(model.encode(inputs["pixel_values"]), expected["codes"])
    for name, tensor in actual.items():
        assert tensor.shape == expected[name].shape, name
        assert (tensor - expected[name]).abs().max().item() < 1e-4, name


def test_pt_and_safetensors_checkpoints_hold_the_same_tensors():
    folder = BUNDLED_FIXTURES / "small-b"
    from_pt = load_reference_state_dict(folder / "original_state_dict.pt")
    from_safetensors = load_reference_state_dict(folder / "original_state_dict.safetensors")
    assert from_pt.keys() == from_safetensors.keys()
    assert all(torch.equal(from_pt[key], from_safetensors[key]) for key in from_pt)


def test_full_size_manifest_converts_with_matching_parameter_counts():
    manifest = json.loads((BUNDLED_FIXTURES / "full_size_manifest.json").read_text())
    with torch.device("meta"):
        reference = {
            key: torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]))
            for key, spec in manifest["keys"].items()
        }
        config = infer_config(reference, config_from_reference_schema(manifest["config"]))
        model = SeedTokenizerModel(config)
    assert len(reference) == manifest["num_keys"]
    converted = convert_state_dict(reference, model.state_dict())  # raises on any missing/unexpected key
    assert converted.keys() == model.state_dict().keys()
    # Parameter counts per reference module, counted on our model through the same key mapping.
    prefixes = {
        "query_tokens": ["query_tokens"],
        "pos_embed": ["reconstruction_blocks.position_embedding"],
        "pos_embed_image": ["generation_blocks.position_embedding"],
        "visual_encoder": ["vision_model.embeddings.", "vision_model.encoder."],
        "ln_vision": ["vision_model.post_layernorm."],
        "Qformer": ["qformer."],
        "quantize": ["codebook."],
        "encode_task_layer": ["encode_task_layer."],
        "decode_task_layer": ["decode_task_layer."],
        "blocks": ["reconstruction_blocks.layers."],
        "blocks_image": ["generation_blocks.layers."],
        "image_down": ["generation_head."],
        "distill_image_proj": ["generation_projection."],
    }
    parameters = dict(model.named_parameters())
    for module, expected_count in manifest["parameters_per_top_level_module"].items():
        count = sum(p.numel() for name, p in parameters.items() if name.startswith(tuple(prefixes[module])))
        # The reference's ViT attention holds q_bias and v_bias; upstream's one qkv bias adds the zero k block.
        if module == "visual_encoder":
            count -= config.vision_config.num_hidden_layers * config.vision_config.hidden_size
        # The reference's Q-Former counts BERT's leftover position_ids buffer.
        if module == "Qformer":
            count += manifest["keys"]["Qformer.bert.embeddings.position_ids"]["shape"][1]
        assert count == expected_count, module
    assert config.image_size == 224 and config.num_codes == 8192 and config.generation_embedding_dim == 1024
    assert config.to_dict()["qformer_config"]["cross_attention_frequency"] == 2


def test_default_config_is_the_released_tokenizer():
    manifest = json.loads((BUNDLED_FIXTURES / "full_size_manifest.json").read_text())
    assert SeedTokenizerConfig().to_dict() == config_from_reference_schema(manifest["config"]).to_dict()


def _reference_state_dict() -> tuple[dict, dict]:
    folder = BUNDLED_FIXTURES / "small-b"
    return load_reference_state_dict(folder / "original_state_dict.safetensors"), json.loads(
        (folder / "config.json").read_text()
    )


def _write(tmp_path: Path, state_dict: dict) -> Path:
    path = tmp_path / "checkpoint.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def test_conversion_lists_unexpected_missing_and_misshaped_keys(tmp_path):
    state_dict, reference_config = _reference_state_dict()
    state_dict["extra.weight"] = torch.zeros(3)
    del state_dict["image_down.2.weight"]
    state_dict["distill_image_proj.bias"] = torch.zeros(7)
    output_dir = tmp_path / "converted"
    with pytest.raises(ConversionError) as error:
        convert_seed_tokenizer(_write(tmp_path, state_dict), output_dir, config=reference_config)
    message = str(error.value)
    assert "checkpoint keys with no place in the model: ['extra.weight']" in message
    assert "model keys the checkpoint does not fill: ['generation_head.2.weight']" in message
    assert "generation_projection.bias: checkpoint (7,) vs model (40,)" in message
    # nothing half-written
    assert not output_dir.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_convert_cli_then_auto_model_in_a_fresh_process_gives_identical_codes(tmp_path):
    from seed_hf.cli import main

    folder = BUNDLED_FIXTURES / "small-b"
    config_path = folder / "config.json"
    output_dir = tmp_path / "seed_tokenizer"
    assert (
        main(
            [
                "convert-tokenizer",
                str(folder / "original_state_dict.pt"),
                str(output_dir),
                "--config",
                str(config_path),
            ]
        )
        == 0
    )
    assert (output_dir / "model.safetensors").exists()
    assert not list(output_dir.glob("*.bin")) and not list(output_dir.glob("*.pt"))
    code = (
        "import sys, torch, seed_hf; from transformers import AutoModel; from safetensors.torch import load_file; "
        f"m = AutoModel.from_pretrained({str(output_dir)!r}).eval(); "
        f"x = load_file({str(folder / 'inputs.safetensors')!r})['pixel_values']; "
        "print(type(m).__name__, m.encode(x).tolist())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    name, codes = result.stdout.strip().split(" ", 1)
    assert name == "SeedTokenizerModel"
    assert json.loads(codes) == load_file(str(folder / "expected.safetensors"))["codes"].tolist()


def test_save_and_load_round_trip_bfloat16(tmp_path):
    torch.manual_seed(0)
    model = SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()
    model.save_pretrained(tmp_path / "m")
    reloaded = SeedTokenizerModel.from_pretrained(tmp_path / "m", dtype=torch.bfloat16).eval()
    assert reloaded.dtype == torch.bfloat16
    pixel_values = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        codes = reloaded.encode(pixel_values.bfloat16())
        embeddings = reloaded.decode(codes)
    assert codes.shape == (3, 32) and codes.dtype == torch.int64
    assert embeddings.shape == (3, 16) and embeddings.dtype == torch.bfloat16


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_queries_are_causal(attn_implementation):
    torch.manual_seed(0)
    model = SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()
    model.set_attn_implementation(attn_implementation)
    pixel_values = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        before = model.causal_embeddings(pixel_values)
        for j in (1, 7, 31):
            original = model.query_tokens[:, j].clone()
            model.query_tokens[:, j] += 1.0
            after = model.causal_embeddings(pixel_values)
            model.query_tokens[:, j] = original
            assert torch.equal(after[:, :j], before[:, :j]), f"queries before {j} changed"
            assert not torch.allclose(after[:, j:], before[:, j:]), f"query {j} had no effect"


def test_factorised_code_space_picks_the_nearest_code_of_each_positions_group(tmp_path):
    """`code_groups`: each position's code is the nearest entry of its own group's codebook slice (checked against
    a brute-force search over the slice), and the groups survive a save / load round trip."""
    groups = [[20, 24], [12, 40]]
    torch.manual_seed(0)
    model = SeedTokenizerModel(tiny_visual_tokenizer_config(num_codes=64, code_groups=groups)).eval()
    pixel_values = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        codes, code_space = model.quantize(model.causal_embeddings(pixel_values))
    codebook = model.codebook.weight.detach()
    slices = [(0, 24)] * 20 + [(24, 64)] * 12
    for position, (start, end) in enumerate(slices):
        distances = torch.cdist(code_space[:, position], codebook[start:end])
        torch.testing.assert_close(codes[:, position], distances.argmin(dim=1) + start, rtol=0, atol=0)
    # the unrestricted nearest code lies outside the group for some position: the groups do change the codes
    unrestricted = torch.cdist(code_space.reshape(-1, code_space.shape[-1]), codebook).argmin(dim=1)
    assert not torch.equal(unrestricted.view_as(codes), codes)
    model.save_pretrained(tmp_path / "grouped")
    reloaded = SeedTokenizerModel.from_pretrained(tmp_path / "grouped").eval()
    assert reloaded.config.code_groups == groups
    with torch.no_grad():
        assert torch.equal(reloaded.encode(pixel_values), codes)


@pytest.mark.parametrize(
    "code_groups", [[[20, 24], [11, 40]], [[20, 24], [12, 39]], [[32]], [32, 64], [[32, 0], [0, 64]]]
)
def test_bad_code_groups(code_groups):
    with pytest.raises(ValueError) as error:
        tiny_visual_tokenizer_config(num_codes=64, code_groups=code_groups)
    assert str(error.value) == (
        "code_groups must be [[num_positions, num_group_codes], ...] of positive ints whose positions add up to "
        f"num_query_tokens (32) and codes to num_codes (64), got {code_groups!r}"
    )


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model = SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()
    pixel_values = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        batched = model.causal_embeddings(pixel_values)
        single = torch.cat([model.causal_embeddings(pixel_values[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("pixel_values", "error", "match"),
    [
        (torch.randn(1, 4, 28, 28), ValueError, r"pixel_values must have 3 channels, got 4"),
        (torch.randn(1, 3, 32, 32), ValueError, r"pixel_values must be 28x28 images, got 32x32"),
        (torch.randn(0, 3, 28, 28), ValueError, r"pixel_values is an empty batch"),
        (torch.randn(3, 28, 28), ValueError, r"pixel_values must have shape \(batch, 3, 28, 28\)"),
        (
            torch.zeros(1, 3, 28, 28, dtype=torch.uint8),
            TypeError,
            r"pixel_values must be a floating-point tensor",
        ),
    ],
)
def test_bad_pixel_values(pixel_values, error, match):
    model = SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()
    with pytest.raises(error, match=match):
        model.encode(pixel_values)


@pytest.mark.parametrize(
    ("image_codes", "error", "match"),
    [
        (torch.full((1, 32), 64), ValueError, r"image_codes must lie in \[0, 64\), got values in \[64, 64\]"),
        (torch.full((1, 32), -1), ValueError, r"image_codes must lie in \[0, 64\)"),
        (
            torch.zeros(1, 31, dtype=torch.long),
            ValueError,
            r"image_codes must have shape \(batch, 32\), got \(1, 31\)",
        ),
        (torch.zeros(0, 32, dtype=torch.long), ValueError, r"image_codes is an empty batch"),
        (torch.zeros(1, 32), TypeError, r"image_codes must be an integer tensor"),
    ],
)
def test_bad_image_codes(image_codes, error, match):
    model = SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()
    with pytest.raises(error, match=match):
        model.decode(image_codes)


def tiny_blip2():
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    torch.manual_seed(0)
    tiny = tiny_visual_tokenizer_config()
    return Blip2ForConditionalGeneration(
        Blip2Config(
            vision_config=tiny.vision_config.to_dict(),
            qformer_config=tiny.qformer_config.to_dict(),
            text_config=OPTConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                ffn_dim=32,
                vocab_size=64,
                word_embed_proj_dim=16,
            ).to_dict(),
            num_query_tokens=32,
        )
    )


def copied_from_blip2(model, blip2) -> bool:
    source = blip2.state_dict()
    copied = [
        key
        for key in model.state_dict()
        if key.startswith(("vision_model.", "qformer.")) or key == "query_tokens"
    ]
    return bool(copied) and all(torch.equal(model.state_dict()[key], source[key]) for key in copied)


def test_from_blip2_copies_vision_tower_qformer_and_queries(tmp_path):
    blip2 = tiny_blip2()
    blip2.save_pretrained(tmp_path / "blip2")
    model = SeedTokenizerModel.from_blip2(
        tmp_path / "blip2", num_codes=64, code_dim=8, generation_embedding_dim=16
    )
    assert copied_from_blip2(model, blip2)
    assert model.config.num_codes == 64
    assert model.vision_model.post_layernorm.eps == model.config.ln_vision_eps == 1e-5


def test_from_blip2_reads_a_sharded_checkpoint_by_repo_id_and_names_a_truncated_one(tmp_path):
    from hub_cache import lay_into_cache

    blip2 = tiny_blip2()
    blip2.save_pretrained(tmp_path / "blip2", max_shard_size="50KB")
    assert len(list((tmp_path / "blip2").glob("*.safetensors"))) > 1
    lay_into_cache(tmp_path / "cache", "org/blip2", tmp_path / "blip2")
    model = SeedTokenizerModel.from_blip2(
        "org/blip2", cache_dir=str(tmp_path / "cache"), local_files_only=True, num_codes=64
    )
    assert copied_from_blip2(model, blip2) and model.config.num_codes == 64

    shard = sorted((tmp_path / "blip2").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(
        OSError, match=r"the weights of '.*blip2' cannot be read: a safetensors file there is trunc"
    ):
        SeedTokenizerModel.from_blip2(tmp_path / "blip2")


def test_from_blip2_rejects_an_incompatible_folder(tmp_path):
    SeedTokenizerModel(tiny_visual_tokenizer_config()).save_pretrained(tmp_path / "not_blip2")
    with pytest.raises(
        ValueError, match="blip2_path must be a BLIP-2 checkpoint folder, got model_type 'seed_tokenizer'"
    ):
        SeedTokenizerModel.from_blip2(tmp_path / "not_blip2")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    config = tiny_visual_tokenizer_config()
    config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = 0.0
    pixel_values = torch.randn(2, 3, 28, 28)
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SeedTokenizerModel(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            layers = [m for m in model.modules() if hasattr(m, "_gradient_checkpointing_func")]
            assert layers and all(m.gradient_checkpointing for m in layers)
        loss = (
            model.causal_embeddings(pixel_values).pow(2).mean()
            + model.decode(torch.arange(32)[None] % 64).sum()
        )
        loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 10
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_a_randomly_initialised_tokenizer_tells_images_apart():
    # BLIP-2's own ViT default (std 1e-10) would map every image to the same features
    torch.manual_seed(0)
    model = SeedTokenizerModel(tiny_visual_tokenizer_config()).eval()
    assert model.config.vision_config.initializer_range == model.config.initializer_range
    with torch.no_grad():
        features = model.image_features(torch.randn(2, 3, 28, 28))
    assert (features[0] - features[1]).abs().max() > 1e-2
    assert (
        SeedTokenizerConfig(vision_config={"initializer_range": 0.5}).vision_config.initializer_range == 0.5
    )
