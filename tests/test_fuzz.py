"""Property-based fuzzing of the processor side: the image processor, the chat template and processor call, the
generation parser and the image-code check. Every input either works or is refused with a `ValueError` or
`TypeError` that says why; no other exception may escape. The example counts keep the file to seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from transformers import AutoProcessor

import seed_hf  # noqa: F401  (registers the Auto classes)
from seed_hf.modeling.generation_seed_llama import ImageSegment
from seed_hf.modeling.image_processing_seed import SeedImageProcessor
from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor

SHAPES = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
             "I", "I;16", "I;16B", "F"]  # fmt: skip
ARRAY_DTYPES = ["bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32",
                "float64", "complex64", "U2", "object"]  # fmt: skip
CONTROL_STRINGS = ["<img>", "</img>", "<image>", "<img_00000>", "<img_00511>", "<img_99999>", "<s>", "</s>",
                   "<unk>", "<img_000", "42>", "\u2060", "{{ bos_token }}", "{% endgeneration %}"]  # fmt: skip


# Built once at import, not as fixtures: Hypothesis prints the arguments of a failing example, and a processor's
# repr is pages long.
processor: SeedLlamaProcessor = AutoProcessor.from_pretrained(SHAPES)
small_image_processor = SeedImageProcessor(size={"height": 8, "width": 8})


def works_or_refuses(call):
    """`call()`, or `None` when it raised a `ValueError`/`TypeError` with a message; anything else escapes."""
    try:
        result = call()
    except (ValueError, TypeError) as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        event(f"refused: {type(error).__name__}")
        return None
    event("accepted")
    return result


# ---------------------------------------------------------------------------------------------------------------
# image processor


@st.composite
def pil_images(draw) -> Image.Image:
    mode = draw(st.sampled_from(PIL_MODES))
    size = (draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    num_bytes = len(Image.new(mode, size).tobytes())
    image = Image.frombytes(mode, size, draw(st.binary(min_size=num_bytes, max_size=num_bytes)))
    if mode in ("P", "L", "RGB") and draw(st.booleans()):
        image.info["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    return image


@st.composite
def image_arrays(draw) -> np.ndarray | torch.Tensor:
    """Arrays laid out as images: [H, W], [H, W, C], [C, H, W] or [N, H, W, C], C in 1, 3, 4."""
    dtype = np.dtype(draw(st.sampled_from(["uint8", "uint16", "bool", "float32", "float64", "int64"])))
    height, width, channels = (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 5)),
        draw(st.sampled_from([1, 3, 4])),
    )
    shape = draw(
        st.sampled_from(
            [
                (height, width),
                (height, width, channels),
                (channels, height, width),
                (2, height, width, channels),
            ]
        )
    )
    if dtype.kind == "f":
        elements = st.floats(0, 1, width=32)
    elif dtype == np.int64:
        elements = st.integers(0, 255)
    else:
        elements = None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    return torch.from_numpy(array) if draw(st.booleans()) else array


@st.composite
def arrays(draw) -> np.ndarray | torch.Tensor:
    dtype = np.dtype(draw(st.sampled_from(ARRAY_DTYPES)))
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple))
    if dtype.kind == "O":
        array = np.full(shape, draw(st.sampled_from([None, "x", 1.5])), dtype=object)
    else:
        array = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()) and dtype.kind in "biuf" and dtype != np.uint32:
        return torch.from_numpy(np.ascontiguousarray(array))
    return array


@FUZZ
@given(image=pil_images(), keep_aspect_ratio=st.booleans(), do_resize=st.booleans())
def test_image_processor_on_any_pil_image(image, keep_aspect_ratio, do_resize):
    out = works_or_refuses(
        lambda: small_image_processor(image, keep_aspect_ratio=keep_aspect_ratio, do_resize=do_resize)
    )
    if out is None:
        assert 0 in image.size or image.mode == "F"  # empty, or float intensities outside [0, 1] / NaN
        return
    pixel_values = np.asarray(out["pixel_values"])
    expected_size = (8, 8) if do_resize else (image.height, image.width)
    assert pixel_values.shape == (1, 3, *expected_size)
    assert np.isfinite(pixel_values).all()


@FUZZ
@given(
    images=st.one_of(image_arrays(), arrays(), st.lists(st.one_of(image_arrays(), arrays()), max_size=3)),
    input_data_format=st.sampled_from([None, "channels_first", "channels_last", "sideways"]),
)
def test_image_processor_on_any_array(images, input_data_format):
    out = works_or_refuses(lambda: small_image_processor(images, input_data_format=input_data_format))
    if out is not None:
        assert np.isfinite(np.asarray(out["pixel_values"])).all()


@FUZZ
@given(images=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.none(), max_size=2)))
def test_image_processor_on_non_images(images):
    assert works_or_refuses(lambda: small_image_processor(images)) is None


# ---------------------------------------------------------------------------------------------------------------
# chat template and processor call

texts = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(CONTROL_STRINGS)), max_size=4).map("".join)


def code_lists(tokens_per_image: int, num_codes: int):
    return st.lists(
        st.integers(-2, num_codes + 2), min_size=tokens_per_image - 1, max_size=tokens_per_image + 1
    )


def chat_items():
    tiny = Image.new("RGB", (3, 2), "red")
    layout = processor.image_token_layout
    return st.one_of(
        st.builds(lambda text: {"type": "text", "text": text}, texts),
        st.builds(lambda codes: {"type": "image", "codes": codes}, code_lists(32, layout.num_image_codes)),
        st.just({"type": "image", "image": tiny}),
        st.just({"type": "image"}),
        st.builds(
            lambda kind: {"type": kind, "text": "x"}, st.sampled_from(["video", "audio", None, 3, "TEXT"])
        ),
        st.just({"text": "no type"}),
        st.just({"type": "text", "text": None}),
        st.just({"type": "image_url", "image_url": {"url": "not a url"}}),
        texts,
        st.integers(),
        st.none(),
    )


def conversations():
    content = st.one_of(texts, st.lists(chat_items(), max_size=4), st.integers(), st.none())
    message = st.one_of(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "user", "assistant", "tool", None, 1]), "content": content}
        ),
        st.fixed_dictionaries({"role": st.just("user")}),
        texts,
        st.integers(),
    )
    conversation = st.lists(message, max_size=4)
    return st.one_of(conversation, st.lists(conversation, min_size=1, max_size=2), message, st.none())


def plausible_conversations():
    """Well-formed chats (system first, then user and assistant turns) whose text may hold typed control tokens."""
    tiny = Image.new("RGB", (3, 2), "red")
    item = st.one_of(
        st.builds(lambda text: {"type": "text", "text": text}, texts),
        st.builds(
            lambda codes: {"type": "image", "codes": codes},
            st.lists(
                st.integers(0, processor.image_token_layout.num_image_codes - 1), min_size=32, max_size=32
            ),
        ),
        st.just({"type": "image", "image": tiny}),
    )
    content = st.one_of(texts, st.lists(item, min_size=1, max_size=3))
    turns = st.lists(content, min_size=1, max_size=4).map(
        lambda contents: [
            {"role": ("user", "assistant")[index % 2], "content": content}
            for index, content in enumerate(contents)
        ]
    )
    system = st.one_of(st.just([]), texts.map(lambda text: [{"role": "system", "content": text}]))
    return st.builds(lambda first, rest: first + rest, system, turns)


def image_items(messages) -> list[dict]:
    return [
        item
        for message in messages
        if isinstance(message.get("content"), list)
        for item in message["content"]
        if item["type"] == "image"
    ]


@FUZZ
@given(
    data=st.data(), template=st.sampled_from([None, "vicuna", "llama2"]), add_generation_prompt=st.booleans()
)
def test_chat_template_on_any_conversation(data, template, add_generation_prompt):
    conversation = data.draw(st.one_of(plausible_conversations(), conversations()))
    inputs = works_or_refuses(
        lambda: processor.apply_chat_template(
            conversation,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=True,
        )
    )
    if inputs is None:
        return
    # a conversation that works has image tokens exactly where it has image items: typed text makes none
    batch = conversation if isinstance(conversation[0], list) else [conversation]
    layout = processor.image_token_layout
    for messages, ids in zip(batch, inputs["input_ids"], strict=True):
        ids = torch.as_tensor(ids)
        images = image_items(messages)
        with_codes = [item for item in images if item.get("codes") is not None]
        assert int((ids == layout.boi_token_id).sum()) == len(images)
        assert int((ids == layout.eoi_token_id).sum()) == len(images)
        assert int(layout.is_code(ids).sum()) == layout.tokens_per_image * len(with_codes)
        expected_placeholders = layout.tokens_per_image * (len(images) - len(with_codes))
        assert int((ids == layout.image_placeholder_id).sum()) == expected_placeholders


@FUZZ
@given(
    text=st.one_of(texts, st.lists(texts, max_size=3), st.integers(), st.none()), num_images=st.integers(0, 2)
)
def test_processor_call_on_any_text(text, num_images):
    images = [Image.new("RGB", (4, 4), "blue")] * num_images or None
    inputs = works_or_refuses(lambda: processor(text=text, images=images))
    if inputs is not None and text:
        # what is accepted is well formed: every image is complete
        for ids in inputs["input_ids"]:
            for segment in processor.parse_generation(ids):
                assert not isinstance(segment, ImageSegment) or segment.complete


# ---------------------------------------------------------------------------------------------------------------
# generation parser and image codes


@st.composite
def token_ids(draw):
    layout = processor.image_token_layout
    vocab_size = len(processor.tokenizer)
    token = st.one_of(
        st.integers(-3, vocab_size + 3),
        st.sampled_from([layout.boi_token_id, layout.eoi_token_id, layout.image_placeholder_id]),
        st.integers(layout.image_code_start_id, layout.image_code_end_id - 1),
    )
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, 40 if ndim == 1 else 6)) for _ in range(ndim))
    values = draw(st.lists(token, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    ids = np.asarray(values, dtype=np.int64).reshape(shape)
    return draw(st.sampled_from([ids, ids.tolist(), torch.from_numpy(ids)]))


@FUZZ
@given(data=st.data(), skip_special_tokens=st.booleans())
def test_parse_generation_on_any_ids(data, skip_special_tokens):
    ids = data.draw(token_ids())
    segments = works_or_refuses(
        lambda: processor.parse_generation(ids, skip_special_tokens=skip_special_tokens)
    )
    if segments is None:
        return
    rows = segments if np.ndim(ids) == 2 else [segments]
    for row in rows:
        assert all(isinstance(segment, (str, ImageSegment)) for segment in row)


@st.composite
def code_tensors(draw):
    dtype = draw(st.sampled_from(["int64", "int32", "int16", "uint8", "bool", "float32", "complex64"]))
    shape = draw(st.lists(st.integers(0, 33), min_size=0, max_size=3).map(tuple))
    array = draw(
        hnp.arrays(np.dtype(dtype), shape, elements=None if dtype != "int64" else st.integers(-5, 600))
    )
    return draw(
        st.sampled_from([array, torch.from_numpy(np.ascontiguousarray(array)), array.tolist()])
        if dtype != "complex64"
        else st.just(array)
    )


valid_codes = st.builds(
    lambda num_images, seed: np.random.default_rng(seed).integers(0, 512, size=(num_images, 32)),
    st.integers(0, 3),
    st.integers(0, 2**32),
).flatmap(lambda codes: st.sampled_from([codes, torch.from_numpy(codes), codes.tolist(), codes[:1].ravel()]))


@FUZZ
@given(codes=st.one_of(valid_codes, code_tensors()))
def test_image_codes_check_on_any_tensor(codes):
    layout = processor.image_token_layout
    checked = works_or_refuses(lambda: layout.check_codes(codes))
    if checked is not None:
        assert (
            checked.dtype == torch.long and checked.ndim == 2 and checked.shape[1] == layout.tokens_per_image
        )
        assert checked.numel() == 0 or (checked.min() >= 0 and checked.max() < layout.num_image_codes)


@FUZZ
@given(
    codes=st.one_of(
        valid_codes,
        code_tensors(),
        st.none(),
        st.text(max_size=3),
        st.lists(st.lists(st.integers(0, 3), max_size=3)),
    )
)
def test_format_image_on_any_codes(codes):
    text = works_or_refuses(lambda: processor.format_image(codes))
    if text is not None:
        ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == processor.tokens_per_image + 2
