"""`SeedLlamaProcessor` and `SeedImageProcessor` held to the behaviours transformers' common tests
(`tests/test_processing_common.py`, `tests/test_image_processing_common.py`) check for a contributed model, on the
shipped checkpoint `models/seed-shapes`; and the processor defects of issue 14 (template variables passed by the
caller, message objects, stale named chat templates after a re-save).

Upstream behaviours left out, and why:
- slow/fast image processor pairs: `SeedImageProcessor` has a single (PIL/NumPy) backend, so there is no pair.
- `test_call_numpy_4_channels`: SEED composites alpha on white and always outputs RGB (test_image_processing_seed.py).
- `test_image_processor_preprocess_arguments`: transformers' typed kwargs reject unknown keywords, nothing warns.
- `add_generation_prompt`: both templates end every user turn with the assistant prefix already.
- video/audio kwargs and chat tests: the processor has no video processor (it reads videos as images of their
  frames, tests/test_video_input.py) and no feature extractor.
- `save_jinja_files=False` (legacy `chat_template.json`): the processor holds several templates, which that format
  cannot store.
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, BatchFeature

import seed_hf  # noqa: F401  (registers the Auto classes)
from seed_hf.modeling.image_processing_seed import SeedImageProcessor
from seed_hf.modeling.processing_seed_llama import CHAT_TEMPLATES, SeedLlamaProcessor

SHAPES = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
TEMPLATE_NAMES = [None, "vicuna", "llama2"]  # None: the default template


@pytest.fixture(scope="module")
def processor() -> SeedLlamaProcessor:
    return AutoProcessor.from_pretrained(SHAPES)


@pytest.fixture(scope="module")
def saved_folder(processor, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("processor")
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reloaded(saved_folder) -> SeedLlamaProcessor:
    return AutoProcessor.from_pretrained(saved_folder)


def random_array(seed: int, height: int = 30, width: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def random_image(seed: int, height: int = 30, width: int = 40) -> Image.Image:
    return Image.fromarray(random_array(seed, height, width))


def chat(image: Image.Image) -> list[dict]:
    """A two-turn chat with a system message, an image given by pixels and one given by codes."""
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What shape?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "image", "codes": list(range(32))}]},
    ]  # fmt: skip


def settings(processor: SeedLlamaProcessor) -> dict:
    """`to_dict()` without `auto_map`: transformers sets that on an object when saving it, and does not keep it as
    an attribute of a loaded processor."""
    return {key: value for key, value in processor.to_dict().items() if key != "auto_map"}


def assert_same_outputs(first: BatchFeature, second: BatchFeature) -> None:
    assert set(first) == set(second)
    for key in first:
        if isinstance(first[key], list):  # ids of different lengths, without `return_tensors`
            assert first[key] == second[key], key
        else:
            np.testing.assert_array_equal(np.asarray(first[key]), np.asarray(second[key]), err_msg=key)


# ---------------------------------------------------------------------------------------------------------------
# issue 14 defects


@pytest.mark.parametrize(
    ("variable", "value", "default_text", "expected_text"),
    [
        ("image_token", "<IMAGE>", "<image>", "<IMAGE>"),
        ("boi_token", "[[", "<img>", "[["),
        ("eoi_token", "]]", "</img>", "]]"),
        ("image_code_token_format", "[%d]", "<img_00003>", "[3]"),
    ],
)
def test_template_variables_passed_by_the_caller_override_the_processors(
    processor, variable, value, default_text, expected_text
):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image", "codes": [3] * 32}, {"type": "text", "text": "?"}]}
    ]  # fmt: skip
    default = processor.apply_chat_template(messages)
    assert default_text in default
    assert processor.apply_chat_template(messages, **{variable: value}) == default.replace(
        default_text, expected_text
    )


@dataclasses.dataclass
class TextBlock:
    type: str
    text: str


@dataclasses.dataclass
class ImageBlock:
    type: str
    image: Image.Image


@dataclasses.dataclass
class CodesBlock:
    type: str
    codes: object


@dataclasses.dataclass
class DataclassMessage:
    role: str
    content: object
    name: str | None = None  # None fields are dropped, as for OpenAI messages


class PydanticLikeMessage:
    """What transformers reads from a pydantic model (e.g. an OpenAI SDK message): `model_dump()`."""

    def __init__(self, **fields):
        self.fields = fields

    def model_dump(self) -> dict:
        return dict(self.fields)


def as_dataclasses(messages: list[dict]) -> list[DataclassMessage]:
    blocks = {"text": TextBlock, "image": ImageBlock}

    def block(item: dict):
        return CodesBlock(**item) if "codes" in item else blocks[item["type"]](**item)

    return [
        DataclassMessage(
            m["role"], m["content"] if isinstance(m["content"], str) else [block(i) for i in m["content"]]
        )
        for m in messages
    ]


MESSAGE_OBJECTS = {
    "dataclasses": as_dataclasses,
    "pydantic-like": lambda messages: [PydanticLikeMessage(**message) for message in messages],
    "mappings": lambda messages: [types.MappingProxyType(message) for message in messages],
    "conversation object": lambda messages: types.SimpleNamespace(messages=messages),
}


@pytest.mark.parametrize("kind", MESSAGE_OBJECTS)
@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_message_objects_render_and_tokenize_like_dicts(processor, kind, template):
    messages = chat(random_image(0))
    objects = MESSAGE_OBJECTS[kind](messages)
    assert processor.apply_chat_template(objects, chat_template=template) == processor.apply_chat_template(
        messages, chat_template=template
    )
    assert processor.apply_chat_template([objects, objects], chat_template=template) == (
        processor.apply_chat_template([messages, messages], chat_template=template)
    )
    tokenized = dict(chat_template=template, tokenize=True, return_dict=True, return_tensors="pt")
    assert_same_outputs(
        processor.apply_chat_template(objects, **tokenized),
        processor.apply_chat_template(messages, **tokenized),
    )


def test_codes_in_message_objects_are_checked(processor):
    messages = [DataclassMessage("user", [CodesBlock("image", torch.full((32,), 10_000))])]
    with pytest.raises(ValueError, match="codes of a chat image"):
        processor.apply_chat_template(messages)


@pytest.mark.parametrize(
    "new_templates",
    [
        "{{ bos_token }}{{ messages[0].content }}",
        {"default": CHAT_TEMPLATES["llama2"], "secondary": "{{ messages[0].content }}"},
        {"vicuna": CHAT_TEMPLATES["vicuna"]},
    ],
    ids=["string", "other names", "no default"],
)
def test_resaving_keeps_exactly_the_templates_the_processor_has(processor, tmp_path, new_templates):
    # the first save leaves the shipped named templates in the folder; the tokenizer holds them too
    processor.save_pretrained(tmp_path)
    changed = AutoProcessor.from_pretrained(tmp_path)
    tokenizer_templates = changed.tokenizer.chat_template
    changed.chat_template = new_templates
    changed.save_pretrained(tmp_path)

    named = {path.stem for path in (tmp_path / "additional_chat_templates").glob("*.jinja")}
    expected_named = set(new_templates) - {"default"} if isinstance(new_templates, dict) else set()
    assert named == expected_named
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == new_templates
    # as upstream: templates saved as .jinja files are shared by the reloaded processor and tokenizer
    assert loaded.tokenizer.chat_template == new_templates
    assert changed.tokenizer.chat_template == tokenizer_templates  # saving leaves the object as it was


# ---------------------------------------------------------------------------------------------------------------
# processor: save / load


def test_processor_save_load_round_trip(processor, saved_folder, reloaded):
    saved = json.loads((saved_folder / "processor_config.json").read_text())
    for name in ("tokens_per_image", "image_token", "boi_token", "eoi_token", "image_code_token_format"):
        assert saved[name] == getattr(processor, name)
    assert settings(reloaded) == settings(processor)
    assert repr(reloaded.image_processor) == repr(processor.image_processor)
    assert reloaded.chat_template == processor.chat_template
    assert reloaded.image_token_layout == processor.image_token_layout

    text, images = ["<image>What shape?", "Draw <image> again"], [random_image(1), random_image(2, 50, 20)]
    assert_same_outputs(reloaded(text=text, images=images), processor(text=text, images=images))


def test_auto_processor_and_class_loading_agree(saved_folder, reloaded):
    direct = SeedLlamaProcessor.from_pretrained(saved_folder)
    assert type(reloaded) is SeedLlamaProcessor
    assert type(reloaded.image_processor) is SeedImageProcessor
    assert settings(direct) == settings(reloaded)


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_chat_templates_round_trip(processor, reloaded, template):
    messages = chat(random_image(3))
    assert reloaded.apply_chat_template(messages, chat_template=template) == processor.apply_chat_template(
        messages, chat_template=template
    )


# ---------------------------------------------------------------------------------------------------------------
# processor: calls and chat templates


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_tokenized_chat_equals_the_processor_on_the_rendered_text(processor, template):
    image = random_image(4)
    rendered = processor.apply_chat_template(chat(image), chat_template=template)
    inputs = processor.apply_chat_template(
        chat(image), chat_template=template, tokenize=True, return_dict=True, return_tensors="pt"
    )
    # as upstream: a rendered text starting with BOS is tokenized without adding special tokens again
    assert rendered.startswith(processor.tokenizer.bos_token)
    expected = processor(text=rendered, images=[image], add_special_tokens=False, return_tensors="pt")
    assert_same_outputs(inputs, expected)
    assert set(inputs) == set(processor.model_input_names)


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_apply_chat_template_batches(processor, batch_size, return_tensors):
    # upstream `_test_apply_chat_template` for images
    texts_only = [[{"role": "user", "content": [{"type": "text", "text": "Describe this."}]}]] * batch_size
    rendered = processor.apply_chat_template(texts_only)
    assert len(rendered) == batch_size
    input_ids = processor.apply_chat_template(texts_only, tokenize=True, return_tensors=return_tensors)
    expected = processor.tokenizer(
        rendered, add_special_tokens=False, return_tensors=return_tensors
    ).input_ids
    assert input_ids.tolist() == expected.tolist()
    padded = processor.apply_chat_template(
        texts_only,
        tokenize=True,
        return_tensors=return_tensors,
        processor_kwargs={"padding": "max_length", "max_length": 100},
    )
    assert padded.shape == (batch_size, 100)

    with_images = [
        [{"role": "user", "content": [{"type": "text", "text": "Describe this."}, {"type": "image", "image": random_image(i)}]}]
        for i in range(batch_size)
    ]  # fmt: skip
    inputs = processor.apply_chat_template(
        with_images, tokenize=True, return_dict=True, return_tensors=return_tensors
    )
    tensor_type = {"pt": torch.Tensor, "np": np.ndarray}[return_tensors]
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    for key in inputs:
        assert isinstance(inputs[key], tensor_type) and len(inputs[key]) == batch_size

    answered = [
        conversation + [{"role": "assistant", "content": "It is the sound of"}]
        for conversation in with_images
    ]
    for prompt in processor.apply_chat_template(answered, continue_final_message=True):
        assert prompt.endswith("It is the sound of")  # no EOS


def test_batched_and_unbatched_calls_agree(processor):
    texts = ["<image>What shape is this?", "Compare <image> with a square"]
    images = [random_image(5), random_image(6, 60, 25)]
    batched = processor(text=texts, images=images)
    singles = [processor(text=text, images=[image]) for text, image in zip(texts, images, strict=True)]
    assert batched["input_ids"] == [single["input_ids"][0] for single in singles]
    assert batched["attention_mask"] == [single["attention_mask"][0] for single in singles]
    np.testing.assert_array_equal(
        batched["pixel_values"], np.concatenate([s["pixel_values"] for s in singles])
    )
    # images nested per sample, as processors accept them, give the same inputs
    assert_same_outputs(processor(text=texts, images=[[image] for image in images]), batched)

    padded = processor(text=texts, images=images, padding=True, return_tensors="pt")
    for row, single in enumerate(singles):
        mask = padded["attention_mask"][row].bool()
        assert padded["input_ids"][row][mask].tolist() == single["input_ids"][0]


def test_return_tensors_variants_hold_the_same_values(processor):
    text, images = ["<image>a", "b <image> c d"], [random_image(7), random_image(8)]
    as_lists = processor(text=text, images=images, padding=True)
    as_numpy = processor(text=text, images=images, padding=True, return_tensors="np")
    as_torch = processor(text=text, images=images, padding=True, return_tensors="pt")
    for key in as_lists:
        assert isinstance(as_numpy[key], np.ndarray) and isinstance(as_torch[key], torch.Tensor)
        np.testing.assert_array_equal(np.asarray(as_lists[key]), as_numpy[key])
        np.testing.assert_array_equal(as_torch[key].numpy(), as_numpy[key])


def test_component_defaults_are_kept_unless_overridden(processor):
    # upstream `test_tokenizer_defaults_preserved_by_kwargs` / `test_image_processor_defaults_preserved_...`
    tokenizer = AutoTokenizer.from_pretrained(SHAPES, max_length=117, padding="max_length")
    image_processor = SeedImageProcessor(**{**processor.image_processor.to_dict(), "rescale_factor": -1.0})
    with_defaults = SeedLlamaProcessor(image_processor, tokenizer)
    inputs = with_defaults(text="<image>hi", images=[random_image(9)], return_tensors="pt")
    assert inputs["input_ids"].shape[-1] == 117
    assert inputs["pixel_values"][0].mean() <= 0
    overridden = with_defaults(
        text="<image>hi",
        images=[random_image(9)],
        return_tensors="pt",
        max_length=112,
        rescale_factor=1 / 255,
    )
    assert overridden["input_ids"].shape[-1] == 112
    np.testing.assert_array_equal(
        overridden["pixel_values"],
        processor(text="<image>hi", images=[random_image(9)], return_tensors="pt")["pixel_values"],
    )


@pytest.mark.parametrize(
    "call_kwargs",
    [
        {
            "return_tensors": "pt",
            "do_rescale": True,
            "rescale_factor": -1.0,
            "padding": "max_length",
            "max_length": 76,
        },
        {
            "common_kwargs": {"return_tensors": "pt"},
            "images_kwargs": {"do_rescale": True, "rescale_factor": -1.0},
            "text_kwargs": {"padding": "max_length", "max_length": 76},
        },
    ],
    ids=["unstructured", "structured"],
)
def test_call_kwargs_reach_the_tokenizer_and_the_image_processor(processor, call_kwargs):
    inputs = processor(text="<image>hi", images=[random_image(10)], **call_kwargs)
    assert inputs["input_ids"].shape[-1] == 76
    assert inputs["pixel_values"][0].mean() <= 0


def test_doubly_passed_kwargs_raise(processor):
    with pytest.raises(ValueError, match="do_rescale"):
        processor(
            text=["<image>hi"], images=[random_image(11)], images_kwargs={"do_rescale": True}, do_rescale=True
        )


def test_decode_forwards_to_the_tokenizer(processor):
    ids = processor(text=["a red circle", "a blue square"])["input_ids"]
    assert processor.batch_decode(ids) == processor.tokenizer.batch_decode(ids)
    assert processor.decode(ids[0], skip_special_tokens=True) == processor.tokenizer.decode(
        ids[0], skip_special_tokens=True
    )


# ---------------------------------------------------------------------------------------------------------------
# image processor


@pytest.fixture(scope="module")
def image_processor(processor) -> SeedImageProcessor:
    return processor.image_processor


def test_image_processor_json_and_save_load_round_trips(image_processor, tmp_path):
    assert json.loads(image_processor.to_json_string())["size"] == {"height": 64, "width": 64}
    image_processor.to_json_file(tmp_path / "image_processor.json")
    assert (
        SeedImageProcessor.from_json_file(tmp_path / "image_processor.json").to_dict()
        == image_processor.to_dict()
    )

    saved_file = image_processor.save_pretrained(tmp_path / "saved")[0]
    json.loads(Path(saved_file).read_text())
    for loaded in (
        SeedImageProcessor.from_pretrained(tmp_path / "saved"),
        AutoImageProcessor.from_pretrained(tmp_path / "saved"),
    ):
        assert type(loaded) is SeedImageProcessor
        assert loaded.to_dict() == image_processor.to_dict()
        images = [random_image(12), random_image(13, 70, 20)]
        assert_same_outputs(loaded(images), image_processor(images))
    # the processor folder alone (processor_config.json) also gives the image processor
    assert AutoImageProcessor.from_pretrained(SHAPES).to_dict() == image_processor.to_dict()


def test_image_processor_initialises_without_parameters():
    assert SeedImageProcessor().size == {"height": 224, "width": 224}


INPUT_TYPES = {
    "pil": Image.fromarray,
    "numpy": lambda hwc: hwc,
    "torch": lambda hwc: torch.from_numpy(hwc).permute(2, 0, 1),  # channels first, as upstream's torchify
}


@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_image_inputs_of_every_type_give_the_same_pixel_values(image_processor, input_type):
    arrays = [random_array(14), random_array(15, 50, 33), random_array(16, 12, 90)]  # unequal resolutions
    convert = INPUT_TYPES[input_type]
    expected = image_processor([Image.fromarray(a) for a in arrays], return_tensors="pt").pixel_values

    single = image_processor(convert(arrays[0]), return_tensors="pt").pixel_values
    assert tuple(single.shape) == (1, 3, 64, 64)
    torch.testing.assert_close(single, expected[:1], rtol=0, atol=0)
    batch = image_processor([convert(a) for a in arrays], return_tensors="pt").pixel_values
    assert tuple(batch.shape) == (3, 3, 64, 64)
    torch.testing.assert_close(batch, expected, rtol=0, atol=0)


@pytest.mark.parametrize("input_data_format", [None, "channels_first"])
def test_channels_first_and_channels_last_agree(image_processor, input_data_format):
    hwc = random_array(17, 20, 30)
    expected = image_processor(hwc, input_data_format="channels_last", return_tensors="np").pixel_values
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    np.testing.assert_array_equal(
        image_processor(chw, input_data_format=input_data_format, return_tensors="np").pixel_values, expected
    )
    np.testing.assert_array_equal(image_processor(hwc, return_tensors="np").pixel_values, expected)


def test_without_resize_the_output_keeps_the_input_size(image_processor):
    arrays = [random_array(18, 21, 35), random_array(19, 21, 35)]
    pixel_values = image_processor(arrays, do_resize=False, return_tensors="np").pixel_values
    assert pixel_values.shape == (2, 3, 21, 35)
    mean = np.asarray(image_processor.image_mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(image_processor.image_std, dtype=np.float32).reshape(3, 1, 1)
    expected = (np.stack(arrays).transpose(0, 3, 1, 2) / 255 - mean) / std
    np.testing.assert_allclose(pixel_values, expected, atol=1e-5)


def test_image_outputs_cast_like_a_batch_feature(image_processor):
    # upstream `test_cast_dtype_device`
    encoding = image_processor([random_image(20), random_image(21)], return_tensors="pt")
    assert encoding.pixel_values.dtype == torch.float32 and encoding.pixel_values.device == torch.device(
        "cpu"
    )
    assert encoding.to(torch.float16).pixel_values.dtype == torch.float16
    assert encoding.to("cpu", torch.bfloat16).pixel_values.dtype == torch.bfloat16
    encoding.update({"input_ids": torch.LongTensor([[1, 2, 3], [4, 5, 6]])})
    cast = encoding.to(torch.float16)
    assert cast.pixel_values.dtype == torch.float16 and cast.input_ids.dtype == torch.long
