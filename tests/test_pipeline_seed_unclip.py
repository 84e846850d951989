import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableUnCLIPImg2ImgPipeline
from PIL import Image
from seed_llama_fixtures import build_tiny_visual_tokenizer
from seed_unclip_fixtures import (
    EMBEDDING_DIM,
    IMAGE_SIZE,
    tiny_seed_unclip_pipeline,
    tiny_unclip_components,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

STEPS = 3


def _codes(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 64, (batch, 32), generator=torch.Generator().manual_seed(seed))


def _latents(batch: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(
        batch, 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2, generator=torch.Generator().manual_seed(seed)
    )


def _tiny_image_encoder() -> CLIPVisionModelWithProjection:
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=EMBEDDING_DIM,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _diffusers_reference(components: dict) -> StableUnCLIPImg2ImgPipeline:
    """diffusers' own unCLIP img2img pipeline on the same components (its image encoder is unused with embeds)."""
    reference = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size=28, crop_size=28),
        image_encoder=_tiny_image_encoder(),
        **components,
    )
    reference.set_progress_bar_config(disable=True)
    return reference


def _run(pipe, **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "np")
    return pipe(generator=torch.Generator().manual_seed(0), **kwargs).images


@pytest.fixture(scope="module")
def pipe() -> SeedUnCLIPPipeline:
    return tiny_seed_unclip_pipeline()


@pytest.mark.parametrize(
    ("scheduler", "guidance_scale", "noise_level"),
    [("ddim", 10.0, 0), ("ddim", 1.0, 0), ("ddim", 10.0, 300), ("dpm-solver++", 10.0, 0)],
)
def test_matches_diffusers_stable_unclip_img2img(pipe, scheduler, guidance_scale, noise_level):
    codes = _codes(2)
    if scheduler == "dpm-solver++":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            pipe.scheduler.config, algorithm_type="dpmsolver++"
        )
    reference = _diffusers_reference({k: v for k, v in pipe.components.items() if k != "seed_tokenizer"})
    try:
        with torch.no_grad():
            embeds = pipe.seed_tokenizer.decode(codes)
        settings = {"guidance_scale": guidance_scale, "noise_level": noise_level}
        ours_from_codes = _run(pipe, image_codes=codes, latents=_latents(2), **settings)
        ours_from_embeds = _run(pipe, image_embeds=embeds, latents=_latents(2), **settings)
        # diffusers takes the batch size from the prompt; the SEED release conditions on the empty prompt
        theirs = _run(reference, prompt=["", ""], image_embeds=embeds, latents=_latents(2), **settings)
    finally:
        pipe.scheduler = tiny_unclip_components()["scheduler"]
    assert ours_from_codes.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_allclose(ours_from_codes, theirs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_from_embeds, theirs, atol=1e-5, rtol=0)


def test_release_defaults():
    call_defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(SeedUnCLIPPipeline.__call__).parameters.items()
    }
    init_defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(SeedUnCLIPPipeline.__init__).parameters.items()
    }
    # steps and guidance come from the pipeline's config, whose defaults are the release's
    assert (call_defaults["guidance_scale"], call_defaults["num_inference_steps"]) == (None, None)
    assert (init_defaults["default_guidance_scale"], init_defaults["default_num_inference_steps"]) == (
        10.0,
        20,
    )
    assert call_defaults["noise_level"] == 0


def test_saved_decoder_settings_are_the_call_defaults(pipe, tmp_path):
    codes = _codes(1)
    tuned = type(pipe)(**pipe.components, default_num_inference_steps=STEPS, default_guidance_scale=3.0)
    tuned.save_pretrained(tmp_path / "detokenizer")
    loaded = SeedUnCLIPPipeline.from_pretrained(tmp_path / "detokenizer", seed_tokenizer=pipe.seed_tokenizer)
    assert (loaded.config.default_num_inference_steps, loaded.config.default_guidance_scale) == (STEPS, 3.0)
    seeded = {"output_type": "np", "generator": torch.Generator().manual_seed(3)}
    plain = loaded(image_codes=codes, **seeded).images
    seeded["generator"] = torch.Generator().manual_seed(3)
    explicit = pipe(image_codes=codes, num_inference_steps=STEPS, guidance_scale=3.0, **seeded).images
    np.testing.assert_array_equal(plain, explicit)
    seeded["generator"] = torch.Generator().manual_seed(3)
    overridden = loaded(image_codes=codes, guidance_scale=1.0, **seeded).images
    assert not np.array_equal(plain, overridden)  # a call argument overrides the saved default


def test_batch_matches_single_images_with_per_image_generators(pipe):
    codes = _codes(2)
    batch = pipe(
        image_codes=codes,
        generator=[torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)],
        num_inference_steps=STEPS,
        output_type="np",
    ).images
    for i in range(2):
        single = pipe(
            image_codes=codes[i : i + 1],
            generator=torch.Generator().manual_seed(10 + i),
            num_inference_steps=STEPS,
            output_type="np",
        ).images
        np.testing.assert_allclose(batch[i : i + 1], single, atol=1e-5, rtol=0)


def test_negative_codes_are_decoded_and_guide_away(pipe):
    codes, negative = _codes(1), _codes(1, seed=5)
    with torch.no_grad():
        negative_embeds = pipe.seed_tokenizer.decode(negative)
    from_codes = _run(pipe, image_codes=codes, negative_image_codes=negative)
    from_embeds = _run(pipe, image_codes=codes, negative_image_embeds=negative_embeds)
    zeros_negative = _run(pipe, image_codes=codes)
    np.testing.assert_allclose(from_codes, from_embeds, atol=1e-6, rtol=0)
    assert np.abs(from_codes - zeros_negative).max() > 1e-3


def test_seeded_runs_reproduce_and_output_types(pipe):
    codes = _codes(1)
    first, second = _run(pipe, image_codes=codes), _run(pipe, image_codes=codes)
    np.testing.assert_array_equal(first, second)
    pil = _run(pipe, image_codes=codes, output_type="pil")
    assert isinstance(pil[0], Image.Image) and pil[0].size == (IMAGE_SIZE, IMAGE_SIZE)
    latents = _run(pipe, image_codes=codes, output_type="latent")
    assert latents.shape == (1, 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2)
    two_per_code = _run(pipe, image_codes=codes, num_images_per_prompt=2)
    assert two_per_code.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_one_unet_batch_per_step_and_empty_prompt_encoded_once():
    pipe = tiny_seed_unclip_pipeline()
    unet_batches, text_calls = [], []
    pipe.unet.register_forward_hook(lambda module, args, output: unet_batches.append(args[0].shape[0]))
    pipe.text_encoder.register_forward_hook(lambda module, args, output: text_calls.append(1))
    _run(pipe, image_codes=_codes(3))
    _run(pipe, image_codes=_codes(2))
    # conditional and unconditional branches share one UNet call per step
    assert unet_batches == [6] * STEPS + [4] * STEPS
    assert len(text_calls) == 1


def test_attention_slicing_keeps_the_output(pipe):
    codes = _codes(2)
    plain = _run(pipe, image_codes=codes)
    pipe.enable_attention_slicing(1)
    try:
        sliced = _run(pipe, image_codes=codes)
    finally:
        pipe.disable_attention_slicing()
    np.testing.assert_allclose(sliced, plain, atol=1e-5, rtol=0)


def test_callback_on_step_end_sees_and_replaces_latents(pipe):
    seen = []

    def zero_latents(pipeline, step, timestep, callback_kwargs):
        seen.append((step, sorted(callback_kwargs)))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    out = pipe(
        image_codes=_codes(1),
        num_inference_steps=STEPS,
        output_type="latent",
        callback_on_step_end=zero_latents,
        callback_on_step_end_tensor_inputs=["latents", "image_embeds"],
    ).images
    assert seen == [(i, ["image_embeds", "latents"]) for i in range(STEPS)]
    assert torch.count_nonzero(out) == 0


def test_save_and_load_in_a_fresh_process(pipe, tmp_path):
    folder = tmp_path / "detokenizer"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    # the custom-pipeline entry names the copy of this pipeline's code saved beside it
    assert index["_class_name"] == ["pipeline_seed_unclip", "SeedUnCLIPPipeline"]
    assert (folder / "pipeline_seed_unclip.py").read_bytes() == Path(
        inspect.getfile(SeedUnCLIPPipeline)
    ).read_bytes()
    assert index["seed_tokenizer"] == ["seed_hf.modeling.modeling_seed_tokenizer", "SeedTokenizerModel"]
    expected = _run(pipe, image_codes=_codes(2))
    code = (
        "import sys, numpy, torch, seed_hf\n"
        f"pipe = seed_hf.SeedUnCLIPPipeline.from_pretrained({str(folder)!r})\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "codes = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(1))\n"
        f"images = pipe(image_codes=codes, generator=torch.Generator().manual_seed(0), num_inference_steps={STEPS},"
        " output_type='np').images\n"
        f"numpy.save({str(tmp_path / 'out.npy')!r}, images)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6, rtol=0)


def test_save_into_an_existing_folder_keeps_other_files(pipe, tmp_path):
    folder = tmp_path / "detokenizer"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    pipe.save_pretrained(folder)
    # as diffusers' own save_pretrained: files that are not the pipeline's are left alone
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "model_index.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detokenizer"]


def test_from_unclip_assembles_from_an_unclip_folder(tmp_path):
    components = tiny_unclip_components()
    _diffusers_reference(components).save_pretrained(tmp_path / "unclip")
    tokenizer = build_tiny_visual_tokenizer()
    tokenizer.save_pretrained(tmp_path / "seed_tokenizer")

    loaded = SeedUnCLIPPipeline.from_unclip(tmp_path / "unclip", tmp_path / "seed_tokenizer")
    loaded.set_progress_bar_config(disable=True)
    in_memory = SeedUnCLIPPipeline(seed_tokenizer=tokenizer, **components)
    in_memory.set_progress_bar_config(disable=True)
    assert "image_encoder" not in loaded.components
    np.testing.assert_allclose(
        _run(loaded, image_codes=_codes(1)), _run(in_memory, image_codes=_codes(1)), atol=1e-6, rtol=0
    )


def test_from_unclip_rejects_a_tokenizer_of_another_embedding_size(tmp_path):
    _diffusers_reference(tiny_unclip_components()).save_pretrained(tmp_path / "unclip")
    config = build_tiny_visual_tokenizer().config
    config.generation_embedding_dim = EMBEDDING_DIM * 2
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    with pytest.raises(ValueError, match="32-d generation embeddings but the unCLIP components expect 16-d"):
        SeedUnCLIPPipeline.from_unclip(tmp_path / "unclip", SeedTokenizerModel(config))
    with pytest.raises(TypeError, match="`seed_tokenizer` must be a SeedTokenizerModel"):
        SeedUnCLIPPipeline.from_unclip(tmp_path / "unclip", object())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"image_codes": torch.zeros(2, 31, dtype=torch.long)},
            r"`image_codes` must have shape \[batch, 32\], got \[2, 31\]",
        ),
        (
            {"image_codes": torch.zeros(32, dtype=torch.long)},
            r"`image_codes` must have shape \[batch, 32\], got \[32\]",
        ),
        (
            {"image_codes": torch.full((1, 32), 64)},
            r"`image_codes` must hold codes in \[0, 64\), got values in \[64, 64\]",
        ),
        ({"image_codes": torch.full((1, 32), -1)}, r"`image_codes` must hold codes in \[0, 64\)"),
        (
            {"image_codes": torch.zeros(1, 32)},
            r"`image_codes` must hold integer codes, got dtype torch.float32",
        ),
        ({"image_embeds": torch.zeros(1, 8)}, r"`image_embeds` must have shape \[batch, 16\], got \[1, 8\]"),
        ({}, "Pass exactly one of `image_codes` and `image_embeds`"),
        (
            {"image_codes": torch.zeros(1, 32, dtype=torch.long), "image_embeds": torch.zeros(1, 16)},
            "Pass exactly one of `image_codes` and `image_embeds`",
        ),
        (
            {
                "image_codes": torch.zeros(2, 32, dtype=torch.long),
                "negative_image_codes": torch.zeros(2, 16, dtype=torch.long),
            },
            r"`negative_image_codes` must have shape \[batch, 32\], got \[2, 16\]",
        ),
        (
            {
                "image_codes": torch.zeros(2, 32, dtype=torch.long),
                "negative_image_codes": torch.zeros(1, 32, dtype=torch.long),
            },
            r"`negative_image_codes` must have one row per `image_codes` row \(2\), got 1",
        ),
        (
            {
                "image_codes": torch.zeros(2, 32, dtype=torch.long),
                "negative_image_embeds": torch.zeros(2, 15),
            },
            r"`negative_image_embeds` must have shape \[batch, 16\], got \[2, 15\]",
        ),
        (
            {"image_codes": torch.zeros(1, 32, dtype=torch.long), "height": 15},
            "`height` must be a positive multiple of the VAE scale factor 2, got 15",
        ),
        (
            {"image_codes": torch.zeros(1, 32, dtype=torch.long), "width": 0},
            "`width` must be a positive multiple of the VAE scale factor 2, got 0",
        ),
        (
            {"image_codes": torch.zeros(1, 32, dtype=torch.long), "latents": torch.zeros(1, 4, 4, 4)},
            r"`latents` must have shape \[1, 4, 8, 8\], got \[1, 4, 4, 4\]",
        ),
        (
            {"image_codes": torch.zeros(1, 32, dtype=torch.long), "noise_level": 1000},
            r"`noise_level` must be in \[0, 999\], got 1000",
        ),
        (
            {"image_codes": torch.zeros(2, 32, dtype=torch.long), "generator": [torch.Generator()]},
            "`generator` is a list of 1 generators but 2 images are requested",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=1, output_type="latent", **kwargs)


def test_codes_without_a_seed_tokenizer_ask_for_embeddings():
    pipe = SeedUnCLIPPipeline(seed_tokenizer=None, **tiny_unclip_components())
    with pytest.raises(ValueError, match="`image_codes` needs a `seed_tokenizer`"):
        pipe(image_codes=_codes(1))


def test_cpu_offload_sequence_names_the_pipeline_models(pipe):
    names = pipe.model_cpu_offload_seq.split("->")
    assert all(isinstance(pipe.components[name], torch.nn.Module) for name in names)
