"""The conventions of upstream pipelines, adopted by `seed-text-to-image`, `seed-image-to-text`, the built-in
`image-text-to-text` / `any-to-any` / `text-generation` tasks on a SEED checkpoint, and the `SeedUnCLIPPipeline`
de-tokenizer (as transformers' pipeline tests and diffusers' `PipelineTesterMixin` check them)."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from seed_unclip_fixtures import IMAGE_SIZE, save_tiny_seed_checkpoint, tiny_seed_unclip_pipeline
from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
from transformers.pipelines.pt_utils import KeyDataset

import seed_hf  # noqa: F401  (registers the tasks and Auto classes)
from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

IMAGE_TOKENS = 34  # <img> + 32 codes + </img>
DRAW = {"max_new_tokens": IMAGE_TOKENS, "num_inference_steps": 1}
PROMPTS = ["a red apple", "a dog running on the beach", "mountains"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_seed_checkpoint(tmp_path_factory.mktemp("seed") / "checkpoint")


@pytest.fixture(scope="module")
def drawer(checkpoint):
    return pipeline("seed-text-to-image", model=checkpoint, device="cpu")


@pytest.fixture(scope="module")
def reader(checkpoint):
    return pipeline("seed-image-to-text", model=checkpoint, device="cpu")


@pytest.fixture(scope="module")
def detokenizer() -> SeedUnCLIPPipeline:
    return tiny_seed_unclip_pipeline()


def _image(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8))


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _assert_same_drawings(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        assert len(one["images"]) == len(other["images"]) >= 1
        for codes, other_codes in zip(one["image_codes"], other["image_codes"], strict=True):
            torch.testing.assert_close(codes, other_codes)
        # the de-tokenizer's batched UNet may round a pixel the other way: one grey level of tolerance
        for image, other_image in zip(one["images"], other["images"], strict=True):
            np.testing.assert_allclose(_pixels(image), _pixels(other_image), atol=1)


# ---------------------------------------------------------------------------------------------------------------
# seed-text-to-image


def test_a_prompts_images_do_not_depend_on_batching(drawer):
    """Prompt i of a seeded call is drawn under seed + i: batched (left-padded), one at a time or alone, the same
    images."""
    prompts = PROMPTS[:2]
    batched = drawer(prompts, seed=3, batch_size=2, **DRAW)
    _assert_same_drawings(batched, drawer(prompts, seed=3, batch_size=1, **DRAW))
    _assert_same_drawings(batched[1:], [drawer(prompts[1], seed=4, **DRAW)])


def test_generators_seed_each_prompt(drawer):
    """`generator=`: a list gives each prompt its own randomness (batching-independent); one generator makes a
    call reproducible."""

    def generators():
        return [torch.Generator().manual_seed(10 + index) for index in range(2)]

    batched = drawer(PROMPTS[:2], generator=generators(), batch_size=2, **DRAW)
    _assert_same_drawings(batched[1:], [drawer(PROMPTS[1], generator=generators()[1:], **DRAW)])
    first = drawer(PROMPTS[0], generator=torch.Generator().manual_seed(4), **DRAW)
    second = drawer(PROMPTS[0], generator=torch.Generator().manual_seed(4), **DRAW)
    _assert_same_drawings([first], [second])
    with pytest.raises(ValueError, match="`generator` is a list of 2 generators but 3 inputs are given"):
        drawer(PROMPTS, generator=generators(), **DRAW)
    with pytest.raises(ValueError, match="pass `seed` or `generator`, not both"):
        drawer(PROMPTS[0], seed=0, generator=torch.Generator(), **DRAW)


@pytest.mark.parametrize(
    ("output_type", "shape"),
    [("np", (IMAGE_SIZE, IMAGE_SIZE, 3)), ("pt", (3, IMAGE_SIZE, IMAGE_SIZE)), ("latent", (4, 8, 8))],
)
def test_num_images_per_prompt_and_output_types(drawer, output_type, shape):
    """Each written image is drawn num_images_per_prompt times (its codes repeated), in the output_type asked;
    "np" holds the "pil" pixels in [0, 1]."""
    output = drawer(PROMPTS[0], seed=2, num_images_per_prompt=2, output_type=output_type, **DRAW)
    assert len(output["images"]) == len(output["image_codes"]) == 2
    assert [tuple(image.shape) for image in output["images"]] == [shape, shape]
    torch.testing.assert_close(output["image_codes"][0], output["image_codes"][1])
    assert len([segment for segment in output["segments"] if not isinstance(segment, str)]) == 2
    assert not np.array_equal(np.asarray(output["images"][0]), np.asarray(output["images"][1]))
    if output_type == "np":
        pil = drawer(PROMPTS[0], seed=2, num_images_per_prompt=2, **DRAW)["images"]
        np.testing.assert_allclose(output["images"][0] * 255, _pixels(pil[0]), atol=1)


def test_guidance_scale_is_the_decoder_guidance(drawer):
    diffusers_name = drawer(PROMPTS[0], seed=1, guidance_scale=3.0, **DRAW)
    old_name = drawer(PROMPTS[0], seed=1, decoder_guidance_scale=3.0, **DRAW)
    default = drawer(PROMPTS[0], seed=1, **DRAW)
    _assert_same_drawings([diffusers_name], [old_name])
    assert not np.array_equal(_pixels(diffusers_name["images"][0]), _pixels(default["images"][0]))
    with pytest.raises(ValueError, match="pass `guidance_scale` or `decoder_guidance_scale`"):
        drawer(PROMPTS[0], guidance_scale=3.0, decoder_guidance_scale=3.0, **DRAW)


def test_negative_prompt_is_the_unconditional_prompt_of_image_guidance(drawer):
    """`negative_prompt` is rendered with the chat template and used as `image_negative_prompt_ids`."""
    negative = drawer.processor.apply_chat_template(
        [{"role": "user", "content": "a blurry photo"}], tokenize=True, return_dict=True, return_tensors="pt"
    )
    guided = {"seed": 0, "image_guidance_scale": 3.0, **DRAW}
    with_negative_prompt = drawer(PROMPTS[0], negative_prompt="a blurry photo", **guided)
    with_negative_ids = drawer(
        PROMPTS[0],
        image_negative_prompt_ids=negative["input_ids"],
        image_negative_prompt_attention_mask=negative["attention_mask"],
        **guided,
    )
    default_negative = drawer(PROMPTS[0], **guided)
    _assert_same_drawings([with_negative_prompt], [with_negative_ids])
    assert not torch.equal(with_negative_prompt["image_codes"][0], default_negative["image_codes"][0])
    with pytest.raises(ValueError, match="pass `image_guidance_scale` \\(> 1\\) too"):
        drawer(PROMPTS[0], negative_prompt="a blurry photo", **DRAW)


def test_chat_template_names_are_checked(drawer):
    with pytest.raises(
        ValueError, match=r"`chat_template` must name one of the processor's templates \[.*'llama2'"
    ):
        drawer(PROMPTS[0], chat_template="nope", **DRAW)
    by_name = drawer(PROMPTS[0], seed=0, chat_template="vicuna", **DRAW)
    by_text = drawer(PROMPTS[0], seed=0, chat_template=drawer.processor.chat_template["vicuna"], **DRAW)
    _assert_same_drawings([by_name], [by_text])


def test_generators_iterables_and_datasets_of_prompts(drawer):
    """As transformers pipelines: a generator or a dataset (by KeyDataset) streams results; a raw dataset of
    rows is refused with the way to pass it."""
    expected = drawer(PROMPTS[:2], seed=0, **DRAW)
    streamed = drawer((prompt for prompt in PROMPTS[:2]), seed=0, **DRAW)
    assert not isinstance(streamed, list)
    _assert_same_drawings(list(streamed), expected)
    dataset = Dataset.from_dict({"prompt": PROMPTS[:2]})
    _assert_same_drawings(list(drawer(KeyDataset(dataset, "prompt"), seed=0, batch_size=2, **DRAW)), expected)
    _assert_same_drawings([drawer(prompt=PROMPTS[0], seed=0, **DRAW)], expected[:1])
    with pytest.raises(ValueError, match=r"input 0 is a dict \(for a datasets.Dataset, pass KeyDataset"):
        list(drawer(dataset, **DRAW))


# ---------------------------------------------------------------------------------------------------------------
# seed-image-to-text


def test_image_to_text_takes_the_image_text_to_text_conventions(reader):
    """`text=` is `question=`; chat messages (positionally or as `text=`) are read as rendered; `images=`;
    `return_full_text`; `generate_kwargs` and `max_new_tokens`."""
    image, question = _image(0), "What is this?"
    greedy = {"do_sample": False, "max_new_tokens": 6}
    answer = reader(image, question=question, **greedy)
    assert reader(image, text=question, **greedy) == answer
    assert reader(images=image, text=question, **greedy) == answer
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
    ]
    assert reader(messages, **greedy) == answer
    assert reader(text=messages, **greedy) == answer
    full = reader(messages, return_full_text=True, **greedy)[0]["generated_text"]
    assert full == [*messages, {"role": "assistant", "content": answer[0]["generated_text"]}]
    full = reader(image, text=question, return_full_text=True, **greedy)[0]["generated_text"]
    assert full == question + answer[0]["generated_text"]
    short = reader(image, text=question, generate_kwargs={"max_new_tokens": 2, "do_sample": False})
    assert answer[0]["generated_text"].startswith(short[0]["generated_text"])
    with pytest.raises(ValueError, match="pass `question` or `text`"):
        reader(image, question=question, text=question)


def test_image_to_text_answers_do_not_depend_on_batching(reader):
    inputs = [
        {"image": _image(1), "question": "What?"},
        {"image": _image(2), "question": "What colour is the big shape?"},
        _image(3),
    ]
    batched = reader(inputs, seed=5, batch_size=3, max_new_tokens=8)
    alone = [reader(item, seed=5 + index, max_new_tokens=8) for index, item in enumerate(inputs)]
    assert batched == alone


# ---------------------------------------------------------------------------------------------------------------
# built-in tasks on a SEED checkpoint


@pytest.mark.parametrize("task", ["image-text-to-text", "any-to-any"])
def test_builtin_multimodal_tasks_load_and_answer(checkpoint, task):
    """The built-in tasks load SEED-LLaMA through their Auto classes and answer as generate() on the processor's
    chat inputs does."""
    answerer = pipeline(task, model=checkpoint, device="cpu")
    image = _image(4)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}
    ]
    output = answerer(text=messages, max_new_tokens=6, do_sample=False, return_full_text=False)

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = model.generate(**inputs, do_sample=False, max_new_tokens=6)
    expected = processor.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert output[0]["generated_text"] == expected


def test_text_generation_writes_images_as_their_token_text(checkpoint):
    """text-generation prints an image as its tokens `<img><img_00012>...</img>` (lossless: parse_generation
    reads the codes back); seed-text-to-image draws them."""
    writer = pipeline("text-generation", model=checkpoint, device="cpu")
    text = writer(
        "a cat", force_image=True, do_sample=False, max_new_tokens=IMAGE_TOKENS, return_full_text=False
    )[0]["generated_text"]
    assert text.startswith("<img><img_") and text.endswith("</img>")
    ids = writer.tokenizer(text, add_special_tokens=False).input_ids
    (segment,) = AutoProcessor.from_pretrained(checkpoint).parse_generation(ids)
    assert segment.complete


# ---------------------------------------------------------------------------------------------------------------
# SeedUnCLIPPipeline (diffusers' PipelineTesterMixin conventions)

STEPS = 2


def _codes(batch: int) -> torch.Tensor:
    return torch.randint(0, 64, (batch, 32), generator=torch.Generator().manual_seed(1))


def _draw(pipe, **kwargs):
    kwargs.setdefault("image_codes", _codes(2))
    kwargs.setdefault("output_type", "np")
    return pipe(num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), **kwargs)


def test_detokenizer_takes_lists_of_code_rows(detokenizer):
    codes = _codes(2)
    expected = _draw(detokenizer, image_codes=codes).images
    np.testing.assert_array_equal(_draw(detokenizer, image_codes=list(codes)).images, expected)
    np.testing.assert_array_equal(_draw(detokenizer, image_codes=codes.tolist()).images, expected)
    guided = _draw(detokenizer, image_codes=codes, negative_image_codes=codes.flip(0)).images
    listed = _draw(detokenizer, image_codes=list(codes), negative_image_codes=list(codes.flip(0))).images
    np.testing.assert_array_equal(listed, guided)


@pytest.mark.parametrize(
    ("image_codes", "error", "message"),
    [
        (
            [],
            TypeError,
            r"`image_codes` must be a LongTensor \[batch, num_query_tokens\], or a list of 1-D code",
        ),
        ([1, 2, 3], TypeError, "got a list holding int"),
        ([["a"] * 32], TypeError, "could not be read as numbers"),
        (
            [torch.zeros(32, dtype=torch.long), torch.zeros(31, dtype=torch.long)],
            ValueError,
            r"shapes \[\[31\], \[32\]\]",
        ),
        ("codes", TypeError, "got str"),
    ],
)
def test_detokenizer_refuses_other_code_lists_clearly(detokenizer, image_codes, error, message):
    with pytest.raises(error, match=message):
        _draw(detokenizer, image_codes=image_codes)


@pytest.mark.parametrize(
    ("output_type", "shape"),
    [
        ("np", (4, IMAGE_SIZE, IMAGE_SIZE, 3)),
        ("pt", (4, 3, IMAGE_SIZE, IMAGE_SIZE)),
        ("latent", (4, 4, 8, 8)),
    ],
)
def test_detokenizer_num_images_per_prompt_and_output_types(detokenizer, output_type, shape):
    images = _draw(detokenizer, num_images_per_prompt=2, output_type=output_type).images
    assert tuple(images.shape) == shape
    pil = _draw(detokenizer, num_images_per_prompt=2, output_type="pil").images
    assert len(pil) == 4 and all(image.size == (IMAGE_SIZE, IMAGE_SIZE) for image in pil)


def test_detokenizer_return_dict_false_is_the_images_tuple(detokenizer):
    (images,) = _draw(detokenizer, return_dict=False)
    np.testing.assert_array_equal(images, _draw(detokenizer).images)


def test_detokenizer_callback_sees_every_step_and_can_interrupt(detokenizer):
    steps = []

    def record(pipe, step, timestep, callback_kwargs):
        steps.append(step)
        assert set(callback_kwargs) == {"latents", "image_embeds"}
        return callback_kwargs

    _draw(
        detokenizer,
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["latents", "image_embeds"],
    )
    assert steps == list(range(STEPS))

    def interrupt(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = True
        return callback_kwargs

    interrupted = _draw(detokenizer, output_type="latent", callback_on_step_end=interrupt).images
    assert not torch.equal(interrupted, _draw(detokenizer, output_type="latent").images)


def test_detokenizer_save_load_round_trip_gives_the_same_images(detokenizer, tmp_path):
    detokenizer.save_pretrained(tmp_path)
    loaded = SeedUnCLIPPipeline.from_pretrained(tmp_path, seed_tokenizer=detokenizer.seed_tokenizer)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_draw(loaded).images, _draw(detokenizer).images)


def test_detokenizer_attention_slicing_and_progress_bar_settings_keep_the_images(detokenizer):
    expected = _draw(detokenizer).images
    detokenizer.enable_attention_slicing(slice_size=1)
    detokenizer.set_progress_bar_config(disable=False, leave=False)
    try:
        np.testing.assert_allclose(_draw(detokenizer).images, expected, atol=1e-5)
    finally:
        detokenizer.disable_attention_slicing()
        detokenizer.set_progress_bar_config(disable=True)
