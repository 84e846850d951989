"""Video input of `SeedLlamaProcessor` (issue #19 item 1): a video is read as uniformly sampled frames, each one SEED
image, in the processor call (`<video>` marks in `text`) and in chat messages (`{"type": "video", ...}` items);
video files are decoded with PyAV. The shipped SEED-Shapes processor is used (64x64 images)."""

from __future__ import annotations

import copy
import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor
from transformers.video_utils import VideoMetadata, default_sample_indices_fn

import seed_hf  # noqa: F401  (registers the Auto classes)
from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor
from seed_hf.modeling.video_processing_seed import read_video_file, sample_frame_indices

SHAPES = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
NUM_FILE_FRAMES = 12
# distinct solid colours, far apart so that a lossy codec keeps them apart
COLOURS = [(16 * i, 255 - 16 * i, (90 * i) % 256) for i in range(16)]


@pytest.fixture(scope="module")
def shipped_processor() -> SeedLlamaProcessor:
    return AutoProcessor.from_pretrained(SHAPES)


@pytest.fixture(scope="module")
def processor(shipped_processor) -> SeedLlamaProcessor:
    """The shipped processor's image processor and tokenizer (64x64 images) in a processor with the library's defaults:
    `num_frames` 4 and no bound on the prompt length (the shipped one has 3 frames, a clip's, and the model's 384)."""
    tokenizer = copy.deepcopy(shipped_processor.tokenizer)
    tokenizer.model_max_length = int(1e30)
    return SeedLlamaProcessor(shipped_processor.image_processor, tokenizer)


def solid_frames(count: int, height: int = 24, width: int = 32) -> list[np.ndarray]:
    """HWC uint8 frames, frame i of colour COLOURS[i] with a white square whose place moves with i."""
    frames = []
    for index in range(count):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = COLOURS[index]
        frame[2:6, index : index + 4] = 255
        frames.append(frame)
    return frames


def as_images_text(num_images: int) -> str:
    return "<image>" * num_images


def assert_same_inputs(first, second) -> None:
    assert first["input_ids"] == second["input_ids"]
    np.testing.assert_array_equal(np.asarray(first["pixel_values"]), np.asarray(second["pixel_values"]))


def write_video(path: Path, codec: str, pixel_format: str, frames: list[np.ndarray]) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pixel_format
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def video_files(tmp_path_factory) -> dict[str, Path]:
    """The same 12 frames as a lossless Matroska file (FFV1, RGB) and a lossy MPEG-4 file."""
    folder = tmp_path_factory.mktemp("videos")
    frames = solid_frames(NUM_FILE_FRAMES, 64, 64)
    return {
        "lossless": write_video(folder / "clip.mkv", "ffv1", "bgr0", frames),
        "lossy": write_video(folder / "clip.mp4", "mpeg4", "yuv420p", frames),
    }


# ---------------------------------------------------------------------------------------------------------------
# frame sampling


@pytest.mark.parametrize("total_num_frames", [1, 3, 4, 7, 12, 100])
@pytest.mark.parametrize("num_frames", [1, 4, 8])
def test_sampling_is_transformers_uniform_rule_or_every_frame(total_num_frames, num_frames):
    indices = sample_frame_indices(total_num_frames, num_frames)
    if num_frames >= total_num_frames:
        assert indices == list(range(total_num_frames))
    else:
        metadata = VideoMetadata(total_num_frames=total_num_frames)
        assert indices == default_sample_indices_fn(metadata, num_frames=num_frames).tolist()
        assert indices[0] == 0 and len(set(indices)) == num_frames and indices == sorted(indices)


def test_twelve_frames_read_as_four_are_every_third(processor):
    frames = [Image.fromarray(frame) for frame in solid_frames(12)]
    assert_same_inputs(
        processor(text="<video>", videos=frames),
        processor(text=as_images_text(4), images=[frames[0], frames[3], frames[6], frames[9]]),
    )


# ---------------------------------------------------------------------------------------------------------------
# the processor call


def video_forms(frames: list[np.ndarray]) -> dict[str, object]:
    stacked = np.stack(frames)
    return {
        "pil-frames": [Image.fromarray(frame) for frame in frames],
        "array-frames": frames,
        "tensor-chw-frames": [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames],
        "array-thwc": stacked,
        "array-tchw": stacked.transpose(0, 3, 1, 2),
        "tensor-thwc": torch.from_numpy(stacked),
        "tensor-tchw": torch.from_numpy(stacked).permute(0, 3, 1, 2),
        "tensor-float-tchw": torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255,
    }


@pytest.mark.parametrize("form", list(video_forms(solid_frames(1))))
def test_a_video_is_exactly_its_sampled_frames_as_consecutive_images(processor, form):
    frames = solid_frames(8)
    video = video_forms(frames)[form]
    as_video = processor(text="What happens in <video>? Answer.", videos=video, return_tensors="pt")
    as_images = processor(
        text=f"What happens in {as_images_text(4)}? Answer.",
        images=[frames[index] for index in (0, 2, 4, 6)],
        return_tensors="pt",
    )
    assert torch.equal(as_video["input_ids"], as_images["input_ids"])
    assert torch.equal(as_video["pixel_values"], as_images["pixel_values"])
    layout = processor.image_token_layout
    assert int((as_video["input_ids"] == layout.boi_token_id).sum()) == 4


def test_images_and_videos_join_pixel_values_in_text_order(processor):
    image_a, image_b = solid_frames(14)[12:]
    first_video, second_video = solid_frames(4), solid_frames(12)[4:10]
    texts = ["<image> then <video> and", "<video> after <image>"]
    inputs = processor(
        text=texts, images=[image_a, image_b], videos=[first_video, second_video], num_frames=2, padding=True
    )
    expected = processor(
        text=[
            f"{as_images_text(1)} then {as_images_text(2)} and",
            f"{as_images_text(2)} after {as_images_text(1)}",
        ],
        images=[image_a, first_video[0], first_video[2], second_video[0], second_video[3], image_b],
        padding=True,
    )
    assert_same_inputs(inputs, expected)


def test_a_video_shorter_than_num_frames_gives_all_its_frames(processor):
    frames = solid_frames(3)
    inputs = processor(text="<video>", videos=frames, num_frames=10)
    assert_same_inputs(inputs, processor(text=as_images_text(3), images=frames))


def test_num_frames_of_the_call_overrides_the_processors(processor):
    frames = solid_frames(12)
    default = processor(text="<video>", videos=frames)
    assert len(default["pixel_values"]) == processor.num_frames == 4
    assert len(processor(text="<video>", videos=frames, num_frames=6)["pixel_values"]) == 6


def test_video_token_and_num_frames_are_saved_and_loaded(processor, tmp_path):
    changed = SeedLlamaProcessor(
        processor.image_processor, processor.tokenizer, video_token="[clip]", num_frames=3
    )
    changed.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["video_token"], saved["num_frames"]) == ("[clip]", 3)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    frames = solid_frames(9)
    assert_same_inputs(
        loaded(text="a [clip] b", videos=frames),
        processor(text=f"a {as_images_text(3)} b", images=[frames[0], frames[3], frames[6]]),
    )


def test_videos_without_text_give_pixel_values_after_the_images(processor):
    frames, image = solid_frames(4), solid_frames(6)[5]
    inputs = processor(images=[image], videos=frames, num_frames=2)
    np.testing.assert_array_equal(
        inputs["pixel_values"], processor.image_processor([image, frames[0], frames[2]])["pixel_values"]
    )


# ---------------------------------------------------------------------------------------------------------------
# chat


def video_chat(video_item: dict, text: str = "What moves?") -> list[dict]:
    return [{"role": "user", "content": [video_item, {"type": "text", "text": text}]}]


def images_chat(frames: list, text: str = "What moves?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                *({"type": "image", "image": frame} for frame in frames),
                {"type": "text", "text": text},
            ],
        }
    ]


@pytest.mark.parametrize("template", [None, "vicuna", "llama2"])
def test_a_chat_video_is_its_frames_as_consecutive_image_items(processor, template):
    frames = solid_frames(8)
    video = video_chat({"type": "video", "video": np.stack(frames)})
    images = images_chat([frames[index] for index in (0, 2, 4, 6)])
    assert processor.apply_chat_template(video, chat_template=template) == processor.apply_chat_template(
        images, chat_template=template
    )
    as_video = processor.apply_chat_template(video, chat_template=template, tokenize=True, return_dict=True)
    as_images = processor.apply_chat_template(images, chat_template=template, tokenize=True, return_dict=True)
    assert_same_inputs(as_video, as_images)
    assert len(as_video["pixel_values"]) == 4


def test_chat_num_frames_per_item_and_per_call(processor):
    frames = solid_frames(12)
    per_item = video_chat({"type": "video", "video": frames, "num_frames": 3})
    expected = images_chat([frames[0], frames[4], frames[8]])
    assert processor.apply_chat_template(per_item) == processor.apply_chat_template(expected)
    per_call = video_chat({"type": "video", "video": frames})
    assert processor.apply_chat_template(per_call, num_frames=3) == processor.apply_chat_template(expected)
    both = video_chat({"type": "video", "video": frames, "num_frames": 2})
    assert processor.apply_chat_template(both, num_frames=3).count("<image>") == 2


def test_a_video_mark_typed_in_chat_text_stays_text(processor):
    messages = [{"role": "user", "content": "what is in <video>?"}]
    ids = processor.apply_chat_template(messages, tokenize=True)[0]
    assert processor.image_token_layout.boi_token_id not in ids
    assert "<video>" in processor.tokenizer.decode(ids).replace("\u2060", "")


# ---------------------------------------------------------------------------------------------------------------
# video files (PyAV)


def mean_colours(frames) -> np.ndarray:
    """Mean colour of each frame outside its moving white square."""
    return np.stack([np.asarray(frame)[8:].reshape(-1, 3).mean(axis=0) for frame in frames])


@pytest.mark.parametrize(("kind", "tolerance"), [("lossless", 0), ("lossy", 6)])
def test_a_video_file_gives_its_uniformly_sampled_frames_in_order(video_files, kind, tolerance):
    frames, total_num_frames = read_video_file(str(video_files[kind]), num_frames=4)
    assert total_num_frames == NUM_FILE_FRAMES
    assert [frame.shape for frame in frames] == [(64, 64, 3)] * 4
    np.testing.assert_allclose(
        mean_colours(frames), [COLOURS[index] for index in (0, 3, 6, 9)], atol=tolerance
    )


def test_the_matroska_file_has_no_frame_count_in_its_header(video_files):
    """The lossless file exercises the count of frames by packets (the MPEG-4 file has the header's count)."""
    av = pytest.importorskip("av")
    with av.open(str(video_files["lossless"])) as container:
        assert container.streams.video[0].frames == 0
    with av.open(str(video_files["lossy"])) as container:
        assert container.streams.video[0].frames == NUM_FILE_FRAMES


def test_a_lossless_video_file_gives_the_tokens_and_pixels_of_its_frames(processor, video_files):
    frames = solid_frames(NUM_FILE_FRAMES, 64, 64)
    path = str(video_files["lossless"])
    expected = processor(text=f"a {as_images_text(6)} b", images=frames[::2])
    assert_same_inputs(processor(text="a <video> b", videos=path, num_frames=6), expected)
    chat = processor.apply_chat_template(
        video_chat({"type": "video", "path": path, "num_frames": 6}), tokenize=True, return_dict=True
    )
    assert_same_inputs(
        chat, processor.apply_chat_template(images_chat(frames[::2]), tokenize=True, return_dict=True)
    )


@pytest.fixture(scope="module")
def video_server(video_files):
    """An http://127.0.0.1 URL serving the folder of the video files."""
    folder = video_files["lossless"].parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_video_url_reads_as_its_file(processor, video_files, video_server):
    by_url = processor(text="<video>", videos=video_server + video_files["lossless"].name)
    assert_same_inputs(by_url, processor(text="<video>", videos=str(video_files["lossless"])))
    chat = video_chat({"type": "video", "url": video_server + video_files["lossy"].name})
    pixels = processor.apply_chat_template(chat, tokenize=True, return_dict=True)["pixel_values"]
    assert len(pixels) == 4


def test_without_pyav_a_video_file_asks_for_the_video_extra(processor, video_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "seed-hf\[video\]"'):
        processor(text="<video>", videos=str(video_files["lossless"]))
    # frames in memory need no PyAV
    assert len(processor(text="<video>", videos=solid_frames(4))["pixel_values"]) == 4


# ---------------------------------------------------------------------------------------------------------------
# videos longer than the context


@pytest.fixture
def bounded_processor(processor, monkeypatch) -> SeedLlamaProcessor:
    """The processor with a tokenizer of model_max_length 200."""
    assert processor.tokenizer.model_max_length > 1e9
    monkeypatch.setattr(processor.tokenizer, "model_max_length", 200)
    return processor


def test_a_video_longer_than_the_context_names_the_frames_that_fit(bounded_processor):
    frames = solid_frames(12)
    text = "What happens in <video>?"
    with pytest.raises(ValueError, match="model_max_length 200") as caught:
        bounded_processor(text=text, videos=frames, num_frames=8)
    fits = int(caught.value.args[0].split(" of its frames would fit")[0].rsplit(" ", 1)[1])
    message = caught.value.args[0]
    assert "video 0 of `videos` is 8 frames (of 12), 272 tokens" in message  # 8 x (<img> + 32 + </img>)
    assert 0 < fits < 8
    assert len(bounded_processor(text=text, videos=frames, num_frames=fits)["input_ids"][0]) <= 200
    with pytest.raises(ValueError, match="model_max_length"):
        bounded_processor(text=text, videos=frames, num_frames=fits + 1)


def test_a_chat_video_longer_than_the_context_is_refused(bounded_processor):
    messages = video_chat({"type": "video", "video": solid_frames(12), "num_frames": 8})
    with pytest.raises(ValueError, match=r"the video of item 0 of message 0 \(user\) is 8 frames \(of 12\)"):
        bounded_processor.apply_chat_template(messages, tokenize=True)
    assert (
        bounded_processor.apply_chat_template(messages).count("<image>") == 8
    )  # rendering alone counts no tokens


# ---------------------------------------------------------------------------------------------------------------
# bad input


def mixed_sizes() -> list[np.ndarray]:
    return [*solid_frames(2), solid_frames(1, 30, 32)[0]]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: p(text="<video>", videos=solid_frames(4), num_frames=0), ValueError, "`num_frames` must be a positive int, got 0"),
        (lambda p: p(text="<video>", videos=solid_frames(4), num_frames=-2), ValueError, "`num_frames` must be a positive int"),
        (lambda p: p(text="<video>", videos=solid_frames(4), num_frames=2.5), TypeError, "`num_frames` must be a positive int, got float"),
        (lambda p: p(text="<video>", videos=solid_frames(4), num_frames="4"), TypeError, "`num_frames` must be a positive int, got str"),
        (lambda p: p(text="<video>", videos=solid_frames(4), num_frames=True), TypeError, "`num_frames` must be a positive int, got bool"),
        (lambda p: SeedLlamaProcessor(p.image_processor, p.tokenizer, num_frames=0), ValueError, "`num_frames` must be a positive int"),
        (lambda p: SeedLlamaProcessor(p.image_processor, p.tokenizer, video_token=""), ValueError, "`video_token` must be a non-empty string"),
        (lambda p: p(text="<video>", videos=[]), ValueError, "`videos` must hold at least one video"),
        (lambda p: p(text="<video>", videos=np.zeros((0, 8, 8, 3), np.uint8)), ValueError, "video 0 of `videos` has no frames"),
        (lambda p: p(text="<video><video>", videos=[solid_frames(2), []]), ValueError, "video 1 of `videos` has no frames"),
        (lambda p: p(text="<video>", videos=mixed_sizes()), ValueError, "frames of video 0 of `videos` must all have one size, got 24x32 for frame 0 and 30x32 for frame 2"),
        (lambda p: p(text="<video> <video>", videos=solid_frames(4)), ValueError, r"`text` marks 2 videos with <video>, but 1 were passed in `videos`"),
        (lambda p: p(text="<video>", videos=[solid_frames(4), solid_frames(4)]), ValueError, r"`text` marks 1 videos with <video>, but 2 were passed"),
        (lambda p: p(text="what is <video>?"), ValueError, r"`text` marks 1 videos with <video>, but 0 were passed"),
        (lambda p: p(text="<video>", videos=solid_frames(2), images=solid_frames(1)), ValueError, r"`text` marks 0 images with <image>, but 1 were passed in `images`"),
        (lambda p: p(text="<video>", videos=5), TypeError, "video 0 of `videos` must be a list of frames"),
        (lambda p: p(text="<video>", videos=solid_frames(1)[0]), ValueError, r"video 0 of `videos` given as an array must have 4 dimensions.*\(24, 32, 3\)"),
        (lambda p: p(text="<video>", videos=[[solid_frames(1)[0], "frame"]]), TypeError, "frame 1 of video 0 of `videos` must be a PIL image"),
        (lambda p: p(text="<video>", videos=[[np.zeros((5, 5, 2), np.uint8)]]), ValueError, "frame 0 of video 0 of `videos`: .*1, 3 or 4 channels"),
        (lambda p: p(text="<video>", videos=[[np.zeros((0, 4, 3), np.uint8)]]), ValueError, "video 0 of `videos`: `images` must be at least 1x1"),
        (lambda p: p(text="<video>", videos="no/such/clip.mp4"), ValueError, "must be an http\\(s\\) URL or the path of a video file, got 'no/such/clip.mp4'"),
        (lambda p: p(text="<video>", videos=str(SHAPES / "config.json")), ValueError, "video 0 of `videos` .*config.json' is not a readable video"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video"})), ValueError, r"video item 0 of message 0 \(user\) must give its video under one key"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video", "video": solid_frames(2), "url": "x"})), ValueError, "under one key"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video", "video": solid_frames(2), "num_frames": 0})), ValueError, r"'num_frames' of video item 0 of message 0 \(user\) must be a positive int"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video", "video": solid_frames(2), "num_frames": "2"})), TypeError, "'num_frames' of video item 0"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video", "video": 5})), TypeError, r"the video of item 0 of message 0 \(user\) must be a list of frames"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video", "video": mixed_sizes()})), ValueError, r"frames of the video of item 0 of message 0 \(user\) must all have one size"),
        (lambda p: p.apply_chat_template(video_chat({"type": "video", "video": solid_frames(2)}), num_frames=0), ValueError, "`num_frames` must be a positive int"),
        (lambda p: p.apply_chat_template(video_chat({"type": "audio", "audio": "a.wav"})), ValueError, "'type' 'text', 'image' or 'video', got 'audio'"),
    ],
)  # fmt: skip
def test_bad_video_input_is_refused_naming_the_argument(processor, call, error, match):
    with pytest.raises(error, match=match):
        call(processor)


def test_the_image_to_text_pipeline_answers_a_video_as_its_frames():
    from transformers import pipeline

    read = pipeline("seed-image-to-text", model=str(SHAPES))
    frames = [Image.fromarray(frame).resize((64, 64)) for frame in solid_frames(3)]
    question = {"type": "text", "text": "What changes?"}
    as_video = [{"role": "user", "content": [{"type": "video", "video": frames}, question]}]
    as_images = [{"role": "user", "content": [*({"type": "image", "image": f} for f in frames), question]}]
    answers = [
        read(chat, do_sample=False, max_new_tokens=12)[0]["generated_text"] for chat in (as_video, as_images)
    ]
    assert answers[0] == answers[1] and answers[0]


def test_the_shipped_processor_reads_a_clip_and_knows_the_models_context(shipped_processor):
    from transformers import AutoConfig

    assert shipped_processor.num_frames == 3
    context = AutoConfig.from_pretrained(SHAPES).max_position_embeddings
    assert shipped_processor.tokenizer.model_max_length == context
    frames = solid_frames(12)
    assert len(shipped_processor(text="<video>", videos=frames)["pixel_values"]) == 3
    text = "What happens in <video>?"
    with pytest.raises(
        ValueError, match=f"model_max_length {context}: video 0 of `videos` is 12 frames"
    ) as caught:
        shipped_processor(text=text, videos=frames, num_frames=12)  # 12 x 34 tokens > 384
    fits = int(caught.value.args[0].split(" of its frames would fit")[0].rsplit(" ", 1)[1])
    assert len(shipped_processor(text=text, videos=frames, num_frames=fits)["input_ids"][0]) <= context
