import json
import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from seed_hf.modeling.image_processing_seed import SeedImageProcessor

# SEED's reference normalisation (CLIP's statistics), written out independently of the implementation.
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def reference_pixel_values(image: PIL.Image.Image, size: int = 224) -> np.ndarray:
    """SEED's pre-processing written directly: PIL bicubic resize -> [0, 1] -> CLIP normalisation, CHW."""
    resized = np.asarray(image.convert("RGB").resize((size, size), PIL.Image.BICUBIC), dtype=np.float32)
    return ((resized / 255 - MEAN) / STD).transpose(2, 0, 1)


def normalised(rgb) -> np.ndarray:
    """Normalised value of one 8-bit RGB colour, shaped [3]."""
    return (np.asarray(rgb, dtype=np.float32) / 255 - MEAN) / STD


def pixels_unresized(image) -> np.ndarray:
    """Output of the processor without resizing, as [H, W, 3] for per-pixel checks."""
    values = SeedImageProcessor(do_resize=False)(image, return_tensors="np")["pixel_values"]
    return values[0].transpose(1, 2, 0)


@pytest.fixture(scope="module")
def rgb_uint8():
    return np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def test_default_path_matches_reference_preprocessing(rgb_uint8):
    image = PIL.Image.fromarray(rgb_uint8)
    other = PIL.Image.fromarray(rgb_uint8[::-1].copy())
    batch = SeedImageProcessor()([image, other], return_tensors="pt")["pixel_values"]
    assert batch.dtype == torch.float32
    assert batch.shape == (2, 3, 224, 224)
    np.testing.assert_allclose(batch[0].numpy(), reference_pixel_values(image), atol=1e-5)
    np.testing.assert_allclose(batch[1].numpy(), reference_pixel_values(other), atol=1e-5)


def test_size_int_gives_square_output_matching_reference(rgb_uint8):
    image = PIL.Image.fromarray(rgb_uint8)
    values = SeedImageProcessor(size=32)(image, return_tensors="pt")["pixel_values"]
    assert values.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(values[0].numpy(), reference_pixel_values(image, 32), atol=1e-5)


@pytest.mark.parametrize(
    ("convert", "atol"),
    [
        pytest.param(lambda a: a, 1e-6, id="numpy-hwc-uint8"),
        pytest.param(lambda a: a.transpose(2, 0, 1).copy(), 1e-6, id="numpy-chw-uint8"),
        pytest.param(lambda a: a.astype(np.float32) / 255, 1e-6, id="numpy-hwc-float01"),
        pytest.param(lambda a: a.astype(np.int64), 1e-6, id="numpy-hwc-int64"),
        pytest.param(lambda a: a.astype(np.uint16) * 257, 1e-6, id="numpy-hwc-uint16"),
        pytest.param(lambda a: a[None], 1e-6, id="numpy-4d-batch"),
        pytest.param(lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()), 1e-6, id="torch-chw-uint8"),
        pytest.param(lambda a: torch.from_numpy(a.transpose(2, 0, 1) / 255.0), 1e-6, id="torch-chw-float64"),
        pytest.param(lambda a: torch.from_numpy(a.copy()), 1e-6, id="torch-hwc-uint8"),
        pytest.param(
            lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None], 1e-6, id="torch-4d-batch"
        ),
        # bfloat16 keeps 8 mantissa bits, so an intensity may move by one 8-bit level
        pytest.param(
            lambda a: torch.from_numpy(a.transpose(2, 0, 1) / 255.0).bfloat16(),
            1.01 / 255 / STD.min(),
            id="torch-chw-bfloat16",
        ),
    ],
)
def test_every_input_type_gives_the_pil_result(rgb_uint8, convert, atol):
    processor = SeedImageProcessor(size=32)
    expected = processor(PIL.Image.fromarray(rgb_uint8), return_tensors="np")["pixel_values"]
    actual = processor(convert(rgb_uint8), return_tensors="np")["pixel_values"]
    assert actual.shape == expected.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(actual, expected, atol=atol)


def test_mixed_list_and_file_path_give_the_pil_results(rgb_uint8, tmp_path):
    path = tmp_path / "image.png"
    PIL.Image.fromarray(rgb_uint8).save(path)
    grey = rgb_uint8[..., 0]
    processor = SeedImageProcessor(size=32)
    values = processor(
        [str(path), grey, torch.from_numpy(rgb_uint8.transpose(2, 0, 1).copy())], return_tensors="np"
    )
    expected_rgb = reference_pixel_values(PIL.Image.fromarray(rgb_uint8), 32)
    expected_grey = reference_pixel_values(PIL.Image.fromarray(grey), 32)
    np.testing.assert_allclose(values["pixel_values"][0], expected_rgb, atol=1e-5)
    np.testing.assert_allclose(values["pixel_values"][1], expected_grey, atol=1e-5)
    np.testing.assert_allclose(values["pixel_values"][2], expected_rgb, atol=1e-5)


def test_keep_aspect_ratio_resizes_shorter_side_then_centre_crops(rgb_uint8):
    image = PIL.Image.fromarray(rgb_uint8)  # 37 x 53 (height x width)
    values = SeedImageProcessor(size=32, keep_aspect_ratio=True)(image, return_tensors="np")["pixel_values"][
        0
    ]
    # shorter side 37 -> 32, longer side truncated as torchvision's Resize(int) does: int(53 * 32 / 37) = 45;
    # then a centre crop 32 wide starting at (45 - 32) // 2
    resized = np.asarray(image.resize((45, 32), PIL.Image.BICUBIC), dtype=np.float32)
    left = (45 - 32) // 2
    expected = ((resized[:, left : left + 32] / 255 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    assert not SeedImageProcessor().keep_aspect_ratio


def test_ambiguous_layout_follows_numpy_hwc_and_torch_chw_conventions(rgb_uint8):
    small = np.ascontiguousarray(rgb_uint8[:3, :5])  # (3, 5, 3): either axis could hold the channels
    processor = SeedImageProcessor(size=8)
    as_hwc = processor(PIL.Image.fromarray(small), return_tensors="np")["pixel_values"]
    as_chw = processor(PIL.Image.fromarray(small.transpose(1, 2, 0).copy()), return_tensors="np")[
        "pixel_values"
    ]
    np.testing.assert_allclose(processor(small, return_tensors="np")["pixel_values"], as_hwc, atol=1e-6)
    np.testing.assert_allclose(
        processor(torch.from_numpy(small), return_tensors="np")["pixel_values"], as_chw, atol=1e-6
    )
    explicit = processor(small, input_data_format="channels_first", return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(explicit, as_chw, atol=1e-6)


def test_rgba_composited_on_white():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[1, 0] = (200, 10, 10, 255)  # opaque -> unchanged
    rgba[1, 1] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[1, 2] = (0, 0, 0, 128)  # half transparent black -> mid grey
    pixels = pixels_unresized(PIL.Image.fromarray(rgba, mode="RGBA"))
    white = normalised((255, 255, 255))
    np.testing.assert_allclose(pixels[0], np.broadcast_to(white, (3, 3)), atol=1e-5)
    np.testing.assert_allclose(pixels[1, 0], normalised((200, 10, 10)), atol=1e-5)
    np.testing.assert_allclose(pixels[1, 1], white, atol=1e-5)
    # PIL's own compositing over white, allowing one 8-bit level of rounding difference
    composite = PIL.Image.alpha_composite(
        PIL.Image.new("RGBA", (3, 2), (255, 255, 255, 255)), PIL.Image.fromarray(rgba, mode="RGBA")
    )
    expected = normalised(np.asarray(composite)[1, 2, :3])
    np.testing.assert_allclose(pixels[1, 2], expected, atol=1.01 / 255 / STD.min())
    # the same array given as a 4-channel numpy image composites identically
    np.testing.assert_allclose(pixels_unresized(rgba), pixels, atol=1e-6)


@pytest.mark.parametrize("mode", ["LA", "La"])
def test_grey_alpha_modes_composited_on_white(mode):
    la = np.array([[[80, 0], [80, 255]]], dtype=np.uint8)  # transparent, opaque grey 80
    image = PIL.Image.fromarray(la, mode="LA").convert(mode)
    assert image.mode == mode
    pixels = pixels_unresized(image)
    np.testing.assert_allclose(pixels[0, 0], normalised((255, 255, 255)), atol=1e-5)
    np.testing.assert_allclose(pixels[0, 1], normalised((80, 80, 80)), atol=1e-5)


def test_palette_alpha_mode_composited_on_white():
    image = PIL.Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    image.putpalette([80, 80, 80, 10, 200, 30] + [0] * 762)
    image.putalpha(PIL.Image.fromarray(np.array([[0, 255]], dtype=np.uint8)))
    assert image.mode == "PA"
    pixels = pixels_unresized(image)
    np.testing.assert_allclose(pixels[0, 0], normalised((255, 255, 255)), atol=1e-5)
    np.testing.assert_allclose(pixels[0, 1], normalised((10, 200, 30)), atol=1e-5)


def test_palette_with_transparent_index_composited_on_white():
    image = PIL.Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.info["transparency"] = 0
    pixels = pixels_unresized(image)
    np.testing.assert_allclose(pixels[0, 0], normalised((255, 255, 255)), atol=1e-5)
    np.testing.assert_allclose(pixels[0, 1], normalised((10, 200, 30)), atol=1e-5)


def test_grey_and_bilevel_modes_repeat_over_rgb():
    grey = PIL.Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L")
    pixels = pixels_unresized(grey)
    for column, level in enumerate((0, 77, 255)):
        np.testing.assert_allclose(pixels[0, column], normalised((level,) * 3), atol=1e-5)
    bilevel = PIL.Image.fromarray(np.array([[False, True]]))
    assert bilevel.mode == "1"
    pixels = pixels_unresized(bilevel)
    np.testing.assert_allclose(pixels[0, 0], normalised((0, 0, 0)), atol=1e-5)
    np.testing.assert_allclose(pixels[0, 1], normalised((255, 255, 255)), atol=1e-5)


def test_cmyk_uses_pillow_rgb_conversion():
    cmyk = PIL.Image.new("CMYK", (2, 1), (0, 255, 255, 0))  # pure red in CMYK
    pixels = pixels_unresized(cmyk)
    np.testing.assert_allclose(pixels[0, 0], normalised((255, 0, 0)), atol=1e-5)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_modes_are_scaled_not_clipped(mode):
    values = [0, 257 * 100, 32768, 51528, 65535]
    image = PIL.Image.fromarray(np.array([values], dtype=">u2" if mode == "I;16B" else "<u2"))
    image = image.convert("I") if mode == "I" else image
    assert image.mode == mode
    pixels = pixels_unresized(image)
    # full scale 65535 is white (Pillow's own conversion saturates from 255 on)
    for column, value in enumerate(values):
        level = round(value * 255 / 65535)
        np.testing.assert_allclose(pixels[0, column], normalised((level,) * 3), atol=1e-5)


def test_float_mode_is_read_as_unit_intensities():
    image = PIL.Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32), mode="F")
    pixels = pixels_unresized(image)
    for column, level in enumerate((0, 64, 255)):
        np.testing.assert_allclose(pixels[0, column], normalised((level,) * 3), atol=1e-5)


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        ([], ValueError, "`images` must contain at least one image, got an empty list"),
        (
            np.zeros((0, 8, 8, 3), np.uint8),
            ValueError,
            "`images` must contain at least one image, got an empty list",
        ),
        (
            np.zeros((8, 8, 2), np.uint8),
            ValueError,
            "`images` must have 1, 3 or 4 channels (grey, RGB or RGBA), got an array of shape (8, 8, 2)",
        ),
        (
            torch.zeros(5, 8, 8),
            ValueError,
            "`images` must have 1, 3 or 4 channels (grey, RGB or RGBA), got an array of shape (5, 8, 8)",
        ),
        (
            np.zeros(8, np.uint8),
            ValueError,
            "`images` arrays must have 2 (H, W), 3 (H, W, C) or (C, H, W), or 4 (batch) dimensions, got shape (8,)",
        ),
        (
            np.zeros((1, 1, 8, 8, 3), np.uint8),
            ValueError,
            "`images` arrays must have 2 (H, W), 3 (H, W, C) or (C, H, W), or 4 (batch) dimensions, "
            "got shape (1, 1, 8, 8, 3)",
        ),
        (
            42,
            TypeError,
            "`images` must be a PIL image, numpy array, torch tensor, file path or URL, or a list of them, got int",
        ),
        (
            [[np.zeros((8, 8, 3), np.uint8)]],
            TypeError,
            "`images` must be a PIL image, numpy array, torch tensor, file path or URL, or a list of them, got list",
        ),
        (
            np.full((8, 8, 3), 2.0, np.float32),
            ValueError,
            "floating-point `images` must hold intensities in [0, 1], got values in [2, 2]; "
            "pass uint8 data for 0..255 intensities",
        ),
        (
            np.full((8, 8, 3), np.nan, np.float32),
            ValueError,
            "floating-point `images` must be finite, got NaN or infinite values",
        ),
        (
            np.full((8, 8, 3), 300, np.int64),
            ValueError,
            "integer `images` of dtype int64 must hold 8-bit intensities in [0, 255], got values in [300, 300]; "
            "pass uint16 data for 16-bit intensities",
        ),
        (
            np.zeros((8, 8, 3), np.complex64),
            TypeError,
            "`images` arrays must have a boolean, integer or floating-point dtype, got complex64",
        ),
    ],
    ids=[
        "empty-list",
        "empty-batch",
        "two-channels",
        "five-channels",
        "one-dim",
        "five-dim",
        "int",
        "nested-list",
        "float-range",
        "nan",
        "int-range",
        "complex",
    ],
)
def test_bad_images_raise_naming_the_argument(images, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        SeedImageProcessor(size=8)(images)


def test_rgb_required_when_conversion_disabled():
    processor = SeedImageProcessor(size=8, do_convert_rgb=False)
    with pytest.raises(
        ValueError, match=re.escape("`images` must be RGB when do_convert_rgb=False, got a L PIL image")
    ):
        processor(PIL.Image.new("L", (8, 8)))
    with pytest.raises(
        ValueError,
        match=re.escape("`images` must be RGB when do_convert_rgb=False, got an array with 4 channels"),
    ):
        processor(np.zeros((8, 8, 4), np.uint8))
    assert processor(PIL.Image.new("RGB", (8, 8)), return_tensors="pt")["pixel_values"].shape == (1, 3, 8, 8)


def test_non_square_size_dict_is_rejected():
    message = "`size` must be {'height': int, 'width': int} or an int, got {'shortest_edge': 8}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SeedImageProcessor(size={"shortest_edge": 8})(PIL.Image.new("RGB", (8, 8)))


def test_without_resize_images_of_different_sizes_come_back_as_a_list(rgb_uint8):
    images = [rgb_uint8, rgb_uint8[:20, :10]]
    values = SeedImageProcessor(do_resize=False)(images)["pixel_values"]
    assert [v.shape for v in values] == [(3, 37, 53), (3, 20, 10)]
    for image, actual in zip(images, values, strict=True):
        expected = ((image.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def _run_python(code: str, cwd) -> str:
    # a fresh interpreter run outside the checkout sees only the installed package and the saved files
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
    return result.stdout


def test_save_and_load_round_trip_in_a_fresh_process(tmp_path, rgb_uint8):
    processor = SeedImageProcessor(size=48, keep_aspect_ratio=True, image_mean=[0.5, 0.5, 0.5])
    processor.save_pretrained(tmp_path / "processor")
    saved = json.loads((tmp_path / "processor" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SeedImageProcessor"
    assert saved["size"] == {"height": 48, "width": 48}
    assert saved["keep_aspect_ratio"] is True
    assert saved["resample"] == int(PIL.Image.BICUBIC)

    np.save(tmp_path / "image.npy", rgb_uint8)
    np.save(tmp_path / "expected.npy", processor(rgb_uint8, return_tensors="np")["pixel_values"])
    code = (
        "import json, numpy as np\n"
        "from seed_hf import SeedImageProcessor\n"
        "loaded = SeedImageProcessor.from_pretrained('processor')\n"
        "values = loaded(np.load('image.npy'), return_tensors='np')['pixel_values']\n"
        "print(json.dumps({'dict': loaded.to_dict(), 'max_error': float(np.abs(values - np.load('expected.npy')).max())}))"
    )
    result = json.loads(_run_python(code, tmp_path))
    assert result["max_error"] == 0.0
    assert result["dict"] == json.loads(json.dumps(processor.to_dict()))


def test_auto_image_processor_from_preprocessor_config_only(tmp_path):
    SeedImageProcessor(size=40).save_pretrained(tmp_path / "processor")
    # the config and its remote code (the processor file and the configuration it imports)
    assert sorted(p.name for p in (tmp_path / "processor").iterdir()) == [
        "configuration_seed_tokenizer.py",
        "image_processing_seed.py",
        "preprocessor_config.json",
    ]
    code = (
        "import seed_hf\n"
        "from transformers import AutoImageProcessor\n"
        "loaded = AutoImageProcessor.from_pretrained('processor')\n"
        "print(type(loaded).__name__, loaded.size.height)"
    )
    assert _run_python(code, tmp_path).split() == ["SeedImageProcessor", "40"]


def test_auto_image_processor_from_a_seed_tokenizer_folder(tmp_path):
    from transformers import AutoImageProcessor

    from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig

    folder = tmp_path / "tokenizer"
    SeedTokenizerConfig().save_pretrained(folder)
    SeedImageProcessor(size=40).save_pretrained(folder)
    assert type(AutoImageProcessor.from_pretrained(folder)) is SeedImageProcessor

    # without `image_processor_type` the class is found through the seed_tokenizer config's registration
    config_path = folder / "preprocessor_config.json"
    settings = json.loads(config_path.read_text())
    del settings["image_processor_type"]
    config_path.write_text(json.dumps(settings))
    loaded = AutoImageProcessor.from_pretrained(folder)
    assert type(loaded) is SeedImageProcessor
    assert loaded.size.height == 40
