import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from seed_llama_fixtures import (
    TINY_IMAGE_SIZE,
    build_tiny_processor,
    build_tiny_seed_llama,
    build_tiny_tokenizer,
)
from seed_unclip_fixtures import IMAGE_SIZE, save_tiny_seed_checkpoint, tiny_seed_unclip_pipeline
from transformers import AutoModelForCausalLM, AutoProcessor, TopKLogitsWarper, TopPLogitsWarper, pipeline

import seed_hf  # noqa: F401  (registers the tasks)
from seed_hf.checkpoint import save_seed_checkpoint
from seed_hf.modeling.generation_seed_llama import ImageSegment, SeedGeneratorSamplingLogitsProcessor
from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline
from seed_hf.pipelines.text_to_image import SeedImageToTextPipeline, SeedTextToImagePipeline

IMAGE_TOKENS = 34  # <img> + 32 codes + </img>
FAST = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_seed_checkpoint(tmp_path_factory.mktemp("seed") / "checkpoint")


@pytest.fixture(scope="module")
def drawer(checkpoint) -> SeedTextToImagePipeline:
    return pipeline("seed-text-to-image", model=checkpoint, device="cpu")


@pytest.fixture(scope="module")
def reader(checkpoint) -> SeedImageToTextPipeline:
    return pipeline("seed-image-to-text", model=checkpoint, device="cpu")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _drawn_segment(model, processor, inputs, seed: int):
    """The one image segment the model writes for `inputs` with the pipeline's sampling settings and `seed`: top-k
    50 (transformers' default) and top-p 0.5, sampled under `torch.Generator().manual_seed(seed)`."""
    sampler = SeedGeneratorSamplingLogitsProcessor(torch.Generator().manual_seed(seed))
    ids = model.generate(
        **inputs,
        force_image=True,
        do_sample=False,
        logits_processor=[TopKLogitsWarper(50), TopPLogitsWarper(0.5), sampler],
        max_new_tokens=IMAGE_TOKENS,
    )
    (segment,) = processor.parse_generation(ids[0, inputs["input_ids"].shape[1] :])
    return segment


def _detokenizer(checkpoint, model) -> SeedUnCLIPPipeline:
    detokenizer = SeedUnCLIPPipeline.from_pretrained(
        f"{checkpoint}/detokenizer", seed_tokenizer=model.visual_tokenizer
    )
    detokenizer.set_progress_bar_config(disable=True)
    return detokenizer


def test_checkpoint_layout_names_its_parts(checkpoint):
    config = json.loads((Path(checkpoint) / "config.json").read_text())
    assert (config["visual_tokenizer_name_or_path"], config["detokenizer_name_or_path"]) == (
        "visual_tokenizer",
        "detokenizer",
    )
    index = json.loads((Path(checkpoint) / "detokenizer" / "model_index.json").read_text())
    # the visual tokenizer is stored once, at the top, and attached to the de-tokenizer on loading
    assert index["seed_tokenizer"] == [None, None]


def test_one_valid_image_per_prompt_every_time(drawer):
    prompts = ["a red apple", "a dog running on the beach", "mountains"]
    for seed in range(3):
        outputs = drawer(prompts, seed=seed, max_new_tokens=IMAGE_TOKENS, batch_size=3, **FAST)
        assert len(outputs) == len(prompts)
        for output in outputs:
            assert len(output["images"]) == 1
            image = output["images"][0]
            assert isinstance(image, Image.Image) and image.size == (IMAGE_SIZE, IMAGE_SIZE)
            assert output["segments"] == output["images"] and output["generated_text"] == ""


def test_text_written_after_the_image_is_returned(drawer):
    output = drawer("a red apple", seed=0, max_new_tokens=IMAGE_TOKENS + 6, **FAST)
    assert isinstance(output["segments"][0], Image.Image)
    assert [s for s in output["segments"] if isinstance(s, str)] == (
        [output["generated_text"]] if output["generated_text"] else []
    )
    assert all(not isinstance(s, ImageSegment) for s in output["segments"])


def test_force_image_false_lets_the_answer_start_with_text(checkpoint, drawer):
    """`force_image=False` reaches `generate`: the answer is what generating without forcing `<img>` gives (here
    with `<img>` suppressed, so text only, which forcing `<img>` would refuse)."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    no_image = {"suppress_tokens": [model.config.boi_token_id], "max_new_tokens": 8}
    output = drawer("a red apple", seed=3, force_image=False, **no_image)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": "a red apple"}], tokenize=True, return_dict=True, return_tensors="pt"
    )
    sampler = SeedGeneratorSamplingLogitsProcessor(torch.Generator().manual_seed(3))
    ids = model.generate(
        **inputs,
        do_sample=False,
        logits_processor=[TopKLogitsWarper(50), TopPLogitsWarper(0.5), sampler],
        **no_image,
    )
    expected = processor.parse_generation(ids[0, inputs["input_ids"].shape[1] :])
    assert output["images"] == [] and output["segments"] == expected == [output["generated_text"]]
    with pytest.raises(ValueError, match="suppress_tokens forbids"):
        drawer("a red apple", seed=3, **no_image)


def test_image_is_the_detokenized_codes_the_llm_wrote(checkpoint, drawer):
    """The pipeline's picture equals running its parts by hand: generate -> parse codes -> SeedUnCLIPPipeline."""
    output = drawer("a red apple", seed=3, max_new_tokens=IMAGE_TOKENS, **FAST)

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": "a red apple"}], tokenize=True, return_dict=True, return_tensors="pt"
    )
    segment = _drawn_segment(model, processor, inputs, seed=3)
    assert segment.complete
    detokenizer = _detokenizer(checkpoint, model)
    expected = detokenizer(
        image_codes=segment.codes[None], generator=torch.Generator().manual_seed(3), **FAST
    ).images
    np.testing.assert_array_equal(_pixels(output["images"][0]), _pixels(expected[0]))


def test_returned_codes_are_the_drawn_images_codes(checkpoint, drawer):
    """`image_codes` holds the codes the image was drawn from: de-tokenizing them gives the same picture."""
    output = drawer("a red apple", seed=3, max_new_tokens=IMAGE_TOKENS, **FAST)
    (codes,) = output["image_codes"]
    assert codes.dtype == torch.long and codes.shape == (IMAGE_TOKENS - 2,)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    detokenizer = _detokenizer(checkpoint, model)
    expected = detokenizer(image_codes=codes[None], generator=torch.Generator().manual_seed(3), **FAST).images
    np.testing.assert_array_equal(_pixels(output["images"][0]), _pixels(expected[0]))


def test_a_conversation_is_drawn_as_the_chat_it_renders(checkpoint, drawer):
    """A conversation (an image by pixels, an earlier drawing by its codes, an instruction) gives the image that
    generating from the processor's rendering of that chat gives; a batch of conversations stays aligned."""
    first = drawer("a red apple", seed=1, max_new_tokens=IMAGE_TOKENS, **FAST)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image", "image": photo}, {"type": "text", "text": "a red apple"}],
        },
        {"role": "assistant", "content": [{"type": "image", "codes": first["image_codes"][0]}]},
        {"role": "user", "content": "make it green"},
    ]
    single = drawer(conversation, seed=5, max_new_tokens=IMAGE_TOKENS, **FAST)
    batch = drawer([conversation, "a dog"], seed=5, max_new_tokens=IMAGE_TOKENS, batch_size=1, **FAST)
    assert len(batch) == 2 and all(len(output["images"]) == 1 for output in batch)
    np.testing.assert_array_equal(single["image_codes"][0], batch[0]["image_codes"][0])

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    # the earlier drawing enters the prompt as its codes, the photo as pixels the model tokenizes
    assert inputs["pixel_values"].shape[0] == 1
    assert processor.format_image(first["image_codes"][0]) in processor.apply_chat_template(conversation)
    segment = _drawn_segment(model, processor, inputs, seed=5)
    np.testing.assert_array_equal(single["image_codes"][0], segment.codes)


def test_seeded_runs_reproduce(drawer):
    first = drawer("a cat", seed=7, max_new_tokens=IMAGE_TOKENS + 4, **FAST)
    second = drawer("a cat", seed=7, max_new_tokens=IMAGE_TOKENS + 4, **FAST)
    other = drawer("a cat", seed=8, max_new_tokens=IMAGE_TOKENS + 4, **FAST)
    np.testing.assert_array_equal(_pixels(first["images"][0]), _pixels(second["images"][0]))
    assert first["generated_text"] == second["generated_text"]
    assert not np.array_equal(_pixels(first["images"][0]), _pixels(other["images"][0]))


def test_seed_leaves_the_global_random_state_alone(drawer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    drawer("a cat", seed=1, max_new_tokens=IMAGE_TOKENS, **FAST)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_detokenizer_settings_are_passed_on(drawer):
    output = drawer("a cat", seed=0, max_new_tokens=IMAGE_TOKENS, height=24, width=32, **FAST)
    assert output["images"][0].size == (32, 24)


def test_captioning_and_vqa(reader):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    caption = reader(image, seed=0, max_new_tokens=8)
    assert len(caption) == 1 and isinstance(caption[0]["generated_text"], str)
    answers = reader(
        [{"image": image, "question": "What colour is it?"}, {"image": image, "question": "Is it a cat?"}],
        seed=0,
        max_new_tokens=8,
        batch_size=2,
    )
    assert len(answers) == 2 and all(isinstance(a[0]["generated_text"], str) for a in answers)


def test_image_to_text_reads_the_image_through_its_codes(checkpoint, reader):
    """The pipeline's answer equals generate() on the processor's chat inputs (pixel values -> codes in the model)."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    answer = reader(image, question="What is this?", max_new_tokens=12, do_sample=False)[0]["generated_text"]

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is this?"}],
        }
    ]
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    assert inputs["pixel_values"].shape[-1] == TINY_IMAGE_SIZE
    ids = model.generate(
        **inputs, do_sample=False, max_new_tokens=12, suppress_tokens=[model.config.boi_token_id]
    )
    new_ids = ids[0, inputs["input_ids"].shape[1] :]
    assert model.config.boi_token_id not in new_ids.tolist()
    assert answer == processor.decode(new_ids, skip_special_tokens=True)


def test_fresh_process_pipeline_from_the_folder(checkpoint, tmp_path):
    code = (
        "import json, sys, seed_hf\n"
        "from transformers import pipeline\n"
        f"drawer = pipeline('seed-text-to-image', model={checkpoint!r}, device='cpu')\n"
        "loaded_before_use = any(m.startswith('diffusers') for m in sys.modules)\n"
        f"out = drawer(['a cat', 'a dog'], seed=0, max_new_tokens={IMAGE_TOKENS}, num_inference_steps=2)\n"
        "print(json.dumps([loaded_before_use, [[im.size for im in o['images']] for o in out]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    loaded_before_use, sizes = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded_before_use is False
    assert sizes == [[[IMAGE_SIZE, IMAGE_SIZE]], [[IMAGE_SIZE, IMAGE_SIZE]]]


def test_a_given_detokenizer_is_used(checkpoint):
    detokenizer = tiny_seed_unclip_pipeline(seed=1)
    drawer = pipeline("seed-text-to-image", model=checkpoint, device="cpu", detokenizer=detokenizer)
    assert drawer.detokenizer is detokenizer
    assert len(drawer("a cat", seed=0, max_new_tokens=IMAGE_TOKENS, **FAST)["images"]) == 1


def test_bad_inputs(drawer, checkpoint):
    with pytest.raises(
        ValueError,
        match=r"`prompts` must be a string, a conversation \(list of message dicts\), or a list, generator or "
        r"dataset \(e.g. KeyDataset\) of them, got int",
    ):
        drawer(3)
    with pytest.raises(
        ValueError,
        match=r"`prompts` must be a string, a conversation \(list of message dicts\) or a non-empty list of them, "
        r"got items of type \['NoneType'\]",
    ):
        drawer(["a cat", None])
    with pytest.raises(ValueError, match="codes of a chat image"):
        drawer([{"role": "user", "content": [{"type": "image", "codes": [1, 2]}]}])
    with pytest.raises(ValueError, match="force_image needs room for a whole image"):
        drawer("a cat", max_new_tokens=10)
    with pytest.raises(ValueError, match="`num_return_sequences` must be 1"):
        drawer("a cat", num_return_sequences=2)


def test_a_model_without_detokenizer_says_how_to_add_one(tmp_path):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_seed_llama(tokenizer)
    model.save_pretrained(tmp_path)
    build_tiny_processor(tokenizer).save_pretrained(tmp_path)
    drawer = pipeline("seed-text-to-image", model=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="needs a de-tokenizer: set model.config.detokenizer_name_or_path"):
        drawer("a cat", max_new_tokens=IMAGE_TOKENS)


def test_save_seed_checkpoint_rejects_parts_that_do_not_fit(tmp_path):
    tokenizer = build_tiny_tokenizer()
    unclip = tiny_seed_unclip_pipeline()
    from seed_llama_fixtures import build_tiny_visual_tokenizer

    visual_tokenizer = build_tiny_visual_tokenizer()
    visual_tokenizer.config.num_codes = 32
    with pytest.raises(ValueError, match="num_codes vs model.config.num_image_codes: 32 != 64"):
        save_seed_checkpoint(
            tmp_path / "bad",
            model=build_tiny_seed_llama(tokenizer),
            processor=build_tiny_processor(tokenizer),
            visual_tokenizer=visual_tokenizer,
            detokenizer=unclip,
        )
    assert not (tmp_path / "bad").exists()
