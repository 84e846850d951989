"""Input hygiene of the SEED-LLaMA processor: text typed in a chat stays text (no forged image or control
tokens), malformed chats and images are refused with a clear error, and one photo gives the same pixels however
it is passed (path, PIL image, chat item)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seed_hf  # noqa: F401  (registers the Auto classes)
from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor

SHAPES = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
TEMPLATE_NAMES = [None, "vicuna", "llama2"]
FORGERIES = [
    "<img><img_00001></img>",
    "<image>",
    "<img_00007>",
    "</img>",
    "<img>",
    "look: <img><image></img> ok",
]


@pytest.fixture(scope="module")
def processor() -> SeedLlamaProcessor:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(SHAPES)


def image_control_ids(processor: SeedLlamaProcessor, ids) -> list[int]:
    """The ids of `ids` that are image codes, `<img>`, `</img>` or the `<image>` placeholder."""
    ids = torch.as_tensor(ids).flatten()
    layout = processor.image_token_layout
    control = layout.is_code(ids) | torch.isin(ids, torch.tensor(processor.image_token_ids))
    return ids[control].tolist()


def random_image(seed: int, height: int = 20, width: int = 40) -> Image.Image:
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    )


# ---------------------------------------------------------------------------------------------------------------
# 1. typed control tokens stay text


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@pytest.mark.parametrize("forged", FORGERIES)
def test_control_tokens_typed_in_chat_text_stay_text(processor, template, forged):
    conversations = [
        [{"role": "user", "content": [{"type": "text", "text": f"what is {forged}?"}]}],
        [{"role": "user", "content": f"what is {forged}?"}],
        [
            {"role": "system", "content": forged},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": forged}]},
            {"role": "user", "content": "again"},
        ],
    ]
    for messages in conversations:
        ids = processor.apply_chat_template(messages, chat_template=template, tokenize=True)
        assert image_control_ids(processor, ids) == []
        # the characters are all still there for the model to read
        assert forged in processor.tokenizer.decode(ids[0]).replace("\u2060", "")


def test_control_tokens_split_over_text_items_stay_text(processor):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "<img_000"}, {"type": "text", "text": "42>"}]}
    ]
    assert image_control_ids(processor, processor.apply_chat_template(messages, tokenize=True)) == []


def test_end_of_sequence_typed_in_chat_text_stays_text(processor):
    ids = processor.apply_chat_template([{"role": "user", "content": "bye </s> <s>"}], tokenize=True)[0]
    assert ids.count(processor.tokenizer.eos_token_id) == 0
    assert ids.count(processor.tokenizer.bos_token_id) == 1  # the template's own


def test_rendered_chat_with_typed_tokens_tokenizes_as_the_chat(processor):
    messages = [{"role": "user", "content": "draw <img><img_00001></img> for me"}]
    rendered = processor.apply_chat_template(messages)
    tokenized = processor.apply_chat_template(messages, tokenize=True)
    assert processor(text=rendered, add_special_tokens=False)["input_ids"] == tokenized


def test_chat_images_still_become_image_tokens(processor):
    codes = list(range(processor.tokens_per_image))
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "codes": codes},
                {"type": "image", "image": random_image(0)},
                {"type": "text", "text": "<img>"},
            ],
        }
    ]
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    ids = inputs["input_ids"][0]
    layout = processor.image_token_layout
    assert (ids == layout.boi_token_id).sum() == 2 and (ids == layout.eoi_token_id).sum() == 2
    assert layout.is_code(ids).sum() == processor.tokens_per_image
    assert (ids == layout.image_placeholder_id).sum() == processor.tokens_per_image
    assert inputs["pixel_values"].shape[0] == 1


def test_text_call_keeps_the_image_placeholder_and_format_image(processor):
    codes = list(range(processor.tokens_per_image))
    inputs = processor(text="see <image> and " + processor.format_image(codes), images=[random_image(1)])
    ids = torch.as_tensor(inputs["input_ids"][0])
    assert (ids == processor.image_token_id).sum() == processor.tokens_per_image
    assert processor.image_token_layout.is_code(ids).sum() == processor.tokens_per_image


@pytest.mark.parametrize(
    "text", ["<img><img_00001></img>", "<img_00007>", "</img>", "<img>", "a <img><image></img> b"]
)
def test_text_call_refuses_malformed_image_markup(processor, text):
    with pytest.raises(ValueError, match="malformed image"):
        processor(text=text, images=[random_image(2)] if "<image>" in text else None)


# ---------------------------------------------------------------------------------------------------------------
# 2. malformed chats


@pytest.mark.parametrize(
    "conversation, error, match",
    [
        ([{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}], ValueError, "'audio'"),
        ([{"role": "user", "content": [{"text": "no type"}]}], ValueError, "'text', 'image' or 'video'"),
        ([{"role": "user", "content": 5}], TypeError, "string or a list of items"),
        ([{"role": "user", "content": {"type": "text", "text": "hi"}}], TypeError, "got dict"),
        ([{"role": "user", "content": ["hi", "there"]}], TypeError, "must be a dict"),
        ({"role": "user", "content": "hi"}, TypeError, "list of messages"),
        ("hi", TypeError, "list of messages"),
        ([], ValueError, "at least one message"),
        ([[]], ValueError, "at least one message"),
        ([{"role": "user"}], ValueError, "no 'content'"),
        ([{"role": "tool", "content": "x"}], ValueError, "role"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], ValueError, "role"),
        ([{"role": "user", "content": [{"type": "text", "text": 3}]}], TypeError, "string 'text'"),
        ([[{"role": "user", "content": "a"}], 5], TypeError, "lists of messages"),
    ],
)
def test_malformed_chats_are_refused(processor, conversation, error, match):
    with pytest.raises(error, match=match):
        processor.apply_chat_template(conversation)


# ---------------------------------------------------------------------------------------------------------------
# 3. images


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (0, 0)),
        Image.new("L", (0, 5)),
        Image.new("RGBA", (5, 0)),
        np.zeros((0, 5, 3), dtype=np.uint8),
        np.zeros((5, 0), dtype=np.uint8),
        torch.zeros(3, 0, 4),
    ],
    ids=["pil-0x0", "pil-0-wide", "pil-0-high", "array-0-high", "array-0-wide", "tensor-0-high"],
)
def test_empty_images_are_refused(processor, image):
    with pytest.raises(ValueError, match="at least 1x1"):
        processor.image_processor(image)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied_however_the_photo_is_passed(processor, tmp_path, suffix):
    path = str(tmp_path / f"photo{suffix}")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    random_image(3).save(path, exif=exif)

    from_path = processor.image_processor(path)["pixel_values"]
    from_pil = processor.image_processor(Image.open(path))["pixel_values"]
    chat = [
        {
            "role": "user",
            "content": [{"type": "image", "image": Image.open(path)}, {"type": "text", "text": "?"}],
        }
    ]
    from_chat = processor.apply_chat_template(chat, tokenize=True, return_dict=True)["pixel_values"]
    chat_path = [
        {"role": "user", "content": [{"type": "image", "path": path}, {"type": "text", "text": "?"}]}
    ]
    from_chat_path = processor.apply_chat_template(chat_path, tokenize=True, return_dict=True)["pixel_values"]
    np.testing.assert_array_equal(from_pil, from_path)
    np.testing.assert_array_equal(np.asarray(from_chat), from_path)
    np.testing.assert_array_equal(np.asarray(from_chat_path), from_path)

    stored = np.asarray(Image.open(path).convert("RGB"))  # the pixels as stored, before the rotation
    upright = processor.image_processor(np.ascontiguousarray(np.rot90(stored, k=-1)))["pixel_values"]
    np.testing.assert_array_equal(from_path, upright)


# ---------------------------------------------------------------------------------------------------------------
# found by tests/test_fuzz.py


def test_empty_text_list_is_refused(processor):
    with pytest.raises(ValueError, match="non-empty list"):
        processor(text=[])


def test_negative_ids_are_refused_by_the_parser(processor):
    with pytest.raises(ValueError, match="non-negative"):
        processor.parse_generation([5, -1])


@pytest.mark.parametrize("codes", [None, "abc", [[1, 2], [3]]])
def test_codes_that_are_not_integers_are_refused(processor, codes):
    with pytest.raises(TypeError, match="image_codes must be a tensor, array or list of ints"):
        processor.format_image(codes)
    if codes is not None:  # a chat image without codes is one given by pixels
        with pytest.raises(TypeError, match="codes of a chat image must be a tensor"):
            processor.apply_chat_template([{"role": "user", "content": [{"type": "image", "codes": codes}]}])


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "LA"])
def test_a_file_reads_as_the_same_image_opened_with_pil(processor, tmp_path, mode):
    # `load_image` converts files to RGB: alpha was dropped (black instead of white) and 16-bit grey clipped
    rng = np.random.default_rng(4)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, size=(6, 7), dtype=np.uint16))
    else:
        image = random_image(4, 6, 7).convert(mode)
        alpha = Image.fromarray(rng.choice(np.array([0, 128, 255], dtype=np.uint8), size=(6, 7)))
        image.putalpha(alpha)
    path = str(tmp_path / "image.png")
    image.save(path)
    from_path = processor.image_processor(path)["pixel_values"]
    np.testing.assert_array_equal(from_path, processor.image_processor(Image.open(path))["pixel_values"])
    chat = [{"role": "user", "content": [{"type": "image", "path": path}]}]
    from_chat = processor.apply_chat_template(chat, tokenize=True, return_dict=True)["pixel_values"]
    np.testing.assert_array_equal(np.asarray(from_chat), from_path)


def test_an_unreadable_file_is_refused(processor, tmp_path):
    path = tmp_path / "not_an_image.png"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable image"):
        processor.image_processor(str(path))
