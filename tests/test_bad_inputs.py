"""The corpus of bad inputs and faults (issue #17): what a new user and an operator get wrong, tried on every public
surface (image processor, chat, models, de-tokenizer, pipelines, loading, saving, command line).

One row per input: an id naming the surface and the input, the call, and the outcome it must have: either it works
(and the result is checked), or it raises `ValueError` / `TypeError` with a message naming the argument, file or
setting at fault. Faults of the environment (a missing or corrupt file, an unreachable server) raise `OSError`
(`TimeoutError` for a server that does not answer in time) naming the file or URL. Never a crash deep inside a
library, a silent wrong result, lost data or a hang. The command line answers with one error line and exit code 2
(bad input) or 1 (fault), never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import importlib.util
import io
import json
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from seed_llama_fixtures import save_fake_release_checkpoint
from seed_unclip_fixtures import save_tiny_seed_checkpoint
from transformers import AutoModel, pipeline

import seed_hf  # noqa: F401  (registers the tasks and Auto classes)
from seed_hf import cli
from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline
from seed_hf.pipelines.seed_llama_pipeline import _Conversation, _Item

NAN, INF = float("nan"), float("inf")
DRAW = {"max_new_tokens": 34, "num_inference_steps": 2}  # <img> + 32 codes + </img>
FILES = ("rgba.png", "palette.png", "grey16.png", "rotated.png")  # alpha, transparent colour, 16 bits, EXIF
FORGERIES = ("<img><img_00001></img>", "<image>", "<img_00042>", "</img>", "</s> <s>")
NEEDS_PYAV = pytest.mark.skipif(
    importlib.util.find_spec("av") is None, reason="video files need PyAV (the video extra)"
)


@dataclass(frozen=True)
class Raises:
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str  # a fragment of the message: the argument, file or setting at fault


@dataclass(frozen=True)
class Works:
    check: Callable  # check(result, env) asserts that the result is right


# ---------------------------------------------------------------------------------------------------- fixtures
def image(seed: int = 0, height: int = 20, width: int = 20, alpha: bool = False) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3 + alpha), dtype=np.uint8)
    if alpha:
        pixels[..., 3] = np.linspace(0, 255, width, dtype=np.uint8)  # from transparent to opaque
    return Image.fromarray(pixels, "RGBA" if alpha else "RGB")


def _write_files(folder: Path) -> None:
    folder.mkdir()
    image(1, alpha=True).save(folder / "rgba.png")
    palette = Image.fromarray(np.random.default_rng(2).integers(0, 4, (20, 20), dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(folder / "palette.png", transparency=1)
    Image.fromarray(np.random.default_rng(3).integers(0, 65535, (20, 20)).astype(np.uint16)).save(
        folder / "grey16.png"
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image(4, 16, 24).save(folder / "rotated.png", exif=exif)
    (folder / "not_an_image.png").write_text("hello")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _servers(folder: Path):
    """URLs of: an HTTP server of `folder` on 127.0.0.1, a port that accepts and never answers, a refusing port."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent, closed = socket.socket(), socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        yield [f"http://127.0.0.1:{port}/" for port in (server.server_address[1], *_ports(silent, closed))]
    finally:
        server.shutdown()
        server.server_close()
        silent.close()
        closed.close()


def _ports(*sockets) -> list[int]:
    return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    checkpoint = Path(save_tiny_seed_checkpoint(root / "checkpoint"))
    drawer = pipeline("seed-text-to-image", model=str(checkpoint), device="cpu")
    reader = pipeline("seed-image-to-text", model=drawer.model, processor=drawer.processor, device="cpu")
    _write_files(root / "www")
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt").write_text("{not a checkpoint")
    (root / "bad.json").write_text("{not json")
    (root / "bad.yaml").write_text("{not: yaml")
    (root / "existing").mkdir()
    (root / "existing" / "keep.txt").write_text("mine")
    release = save_fake_release_checkpoint(root / "release")
    with _servers(root / "www") as (url, silent_url, closed_url):
        yield SimpleNamespace(
            root=root,
            checkpoint=checkpoint,
            drawer=drawer,
            reader=reader,
            detokenizer=drawer.detokenizer,
            model=drawer.model,
            processor=drawer.processor,
            layout=drawer.processor.image_token_layout,
            release=release,
            url=url,
            silent_url=silent_url,
            closed_url=closed_url,
        )


# ------------------------------------------------------------------------------------------------------ helpers
def ip(e, images, **kwargs) -> np.ndarray:
    return np.asarray(e.processor.image_processor(images, **kwargs)["pixel_values"])


def chat(e, messages, **kwargs):
    return e.processor.apply_chat_template(messages, **kwargs)


def user(*content) -> list[dict]:
    return [{"role": "user", "content": list(content)}]


def chat_pixels(e, item: dict) -> np.ndarray:
    messages = user(item, {"type": "text", "text": "?"})
    return np.asarray(chat(e, messages, tokenize=True, return_dict=True)["pixel_values"])


def read_pixels(e, source, **kwargs) -> np.ndarray:
    return np.asarray(e.reader.preprocess(_Item(source, 0), timeout=5.0, **kwargs)["pixel_values"])


def codes(*shape, value=0, dtype=torch.long) -> torch.Tensor:
    return torch.full(shape or (1, 32), value, dtype=dtype)


def embeds(e, value=0.0) -> torch.Tensor:
    values = torch.zeros(1, e.detokenizer.embedding_dim)
    values[0, 0] = value
    return values


def decode(e, **kwargs):
    kwargs = {"num_inference_steps": 1, "output_type": "latent", **kwargs}
    if "image_codes" not in kwargs and "image_embeds" not in kwargs:
        kwargs["image_codes"] = codes()
    return e.detokenizer(**kwargs).images


def seeded_decode(e, **kwargs):
    return decode(e, generator=torch.Generator().manual_seed(0), **kwargs)


def generate(e, input_ids=None, **kwargs):
    return e.model.generate(
        torch.tensor([[1, 5, 6, 7]]) if input_ids is None else input_ids, **{"max_new_tokens": 4, **kwargs}
    )


def pixel_values(e, value=0.0) -> torch.Tensor:
    size = e.model.visual_tokenizer.config.image_size
    values = torch.zeros(1, 3, size, size)
    values[0, 0, 0, 0] = value
    return values


def image_prompt(e) -> dict:
    messages = user({"type": "image", "image": image()}, {"type": "text", "text": "?"})
    return dict(chat(e, messages, tokenize=True, return_dict=True, return_tensors="pt"))


def checkpoint_copy(e, name: str, edit: Callable[[Path], None]) -> Path:
    copy = e.root / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(e.checkpoint, copy)
    edit(copy)
    return copy


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_config(**changes) -> Callable[[Path], None]:
    """Set the given keys of a checkpoint's `config.json`; a `None` value removes the key."""

    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))

    return edit


def run_cli(*argv) -> tuple[int, str]:
    error = io.StringIO()
    with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main([str(arg) for arg in argv])
    return code, error.getvalue()


def exits(code: int, fragment: str) -> Works:
    """The command failed with `code`, its last stderr line naming the problem, and no traceback."""

    def check(result, e) -> None:
        assert result[0] == code and "Traceback" not in result[1], result
        assert fragment in result[1].strip().splitlines()[-1], result[1]

    return Works(check)


def save_into_existing(e, name: str, save: Callable[[Path], None]) -> Path:
    folder = e.root / name
    folder.mkdir(exist_ok=True)
    (folder / "keep.txt").write_text("mine")
    save(folder)
    return folder


def same_as_file(name: str) -> Works:
    return Works(
        lambda pixels, e: np.testing.assert_array_equal(pixels, ip(e, Image.open(e.root / "www" / name)))
    )


def same_as(make) -> Works:
    return Works(lambda result, e: np.testing.assert_array_equal(np.asarray(result), np.asarray(make(e))))


def keeps_unrelated_files(result, e) -> None:
    folder = result if isinstance(result, Path) else e.root / "existing"
    assert (folder / "keep.txt").read_text() == "mine"


def no_control_tokens(ids, e) -> None:
    ids = torch.as_tensor(ids).flatten()
    assert not (e.layout.is_code(ids) | torch.isin(ids, torch.tensor(e.processor.image_token_ids))).any()
    assert not (ids == e.processor.tokenizer.eos_token_id).any()


# -------------------------------------------------------------------------------------------------- the corpus
V, T = ValueError, TypeError  # short names for the table
# fmt: off
ROWS = [
    # image processor: sizes, values, dtypes, channels, containers
    ("ip-pil-0x0", lambda e: ip(e, Image.new("RGB", (0, 0))), Raises(V, "at least 1x1")),
    ("ip-pil-0-wide", lambda e: ip(e, Image.new("L", (0, 5))), Raises(V, "at least 1x1")),
    ("ip-pil-0-high", lambda e: ip(e, Image.new("RGBA", (5, 0))), Raises(V, "at least 1x1")),
    ("ip-array-0-high", lambda e: ip(e, np.zeros((0, 5, 3), np.uint8)), Raises(V, "at least 1x1")),
    ("ip-tensor-0-wide", lambda e: ip(e, torch.zeros(3, 4, 0)), Raises(V, "at least 1x1")),
    ("ip-array-nan", lambda e: ip(e, np.full((4, 4, 3), NAN, np.float32)), Raises(V, "`images` must be finite")),
    ("ip-array-inf", lambda e: ip(e, np.full((4, 4, 3), INF)), Raises(V, "`images` must be finite")),
    ("ip-tensor-nan", lambda e: ip(e, torch.full((3, 4, 4), NAN)), Raises(V, "`images` must be finite")),
    ("ip-float-above-1", lambda e: ip(e, np.full((4, 4, 3), 255.0)), Raises(V, r"intensities in \[0, 1\]")),
    ("ip-int32-above-255", lambda e: ip(e, np.full((4, 4, 3), 300, np.int32)), Raises(V, r"in \[0, 255\]")),
    ("ip-int-negative", lambda e: ip(e, np.full((4, 4, 3), -1)), Raises(V, r"8-bit intensities in \[0, 255\]")),
    ("ip-complex-dtype", lambda e: ip(e, np.zeros((4, 4, 3), np.complex64)), Raises(T, "floating-point dtype")),
    ("ip-object-dtype", lambda e: ip(e, np.array([[1, "a"]], dtype=object)), Raises(T, "floating-point dtype")),
    ("ip-2-channels", lambda e: ip(e, np.zeros((5, 5, 2), np.uint8)), Raises(V, "must have 1, 3 or 4 channels")),
    ("ip-5-channels", lambda e: ip(e, np.zeros((5, 5, 5), np.uint8)), Raises(V, "must have 1, 3 or 4 channels")),
    ("ip-1-d-array", lambda e: ip(e, np.zeros(5, np.uint8)), Raises(V, "`images` arrays must have 2")),
    ("ip-5-d-array", lambda e: ip(e, np.zeros((1, 1, 3, 4, 4), np.uint8)), Raises(V, "`images` arrays must have 2")),
    ("ip-none", lambda e: ip(e, None), Raises(T, "`images` must be a PIL image")),
    ("ip-int", lambda e: ip(e, 5), Raises(T, "`images` must be a PIL image")),
    ("ip-dict", lambda e: ip(e, {"image": 1}), Raises(T, "`images` must be a PIL image")),
    ("ip-list-of-none", lambda e: ip(e, [None]), Raises(T, "`images` must be a PIL image.*NoneType")),
    ("ip-nested-lists", lambda e: ip(e, [[image()]]), Raises(T, "`images` must be a PIL image.*list")),
    ("ip-empty-list", lambda e: ip(e, []), Raises(V, "`images` must contain at least one image")),
    ("ip-string-not-a-source", lambda e: ip(e, "no/such/file.png"), Raises(V, r"must be an http\(s\) URL, the path")),
    ("ip-unreadable-file", lambda e: ip(e, str(e.root / "www/not_an_image.png")), Raises(V, "not a readable image")),
    ("ip-size-0", lambda e: ip(e, image(), size={"height": 0, "width": 0}), Raises(V, "`size` must be")),
    ("ip-rgba-no-convert", lambda e: ip(e, image(alpha=True), do_convert_rgb=False), Raises(V, "must be RGB")),
    ("ip-bool-array", lambda e: ip(e, np.ones((6, 6), bool)), same_as(lambda e: ip(e, np.full((6, 6), 255, np.uint8)))),
    ("ip-uint16-scaled", lambda e: ip(e, np.full((6, 6), 25700, np.uint16)), same_as(lambda e: ip(e, np.full((6, 6), 100, np.uint8)))),
    ("ip-transparent-is-white", lambda e: ip(e, np.zeros((6, 6, 4), np.uint8)), same_as(lambda e: ip(e, np.full((6, 6, 3), 255, np.uint8)))),
    ("ip-bfloat16-tensor", lambda e: ip(e, torch.full((3, 6, 6), 0.5, dtype=torch.bfloat16)), same_as(lambda e: ip(e, torch.full((3, 6, 6), 0.5)))),
    # an image given by URL, path, chat item or base64 reads as the file opened with PIL (alpha, 16-bit, EXIF)
    *((f"ip-url-{name}", lambda e, name=name: ip(e, e.url + name), same_as_file(name)) for name in FILES),
    *((f"ip-path-{name}", lambda e, name=name: ip(e, str(e.root / "www" / name)), same_as_file(name)) for name in FILES),
    *((f"chat-url-{name}", lambda e, name=name: chat_pixels(e, {"type": "image", "url": e.url + name}), same_as_file(name)) for name in FILES),
    *((f"image-to-text-url-{name}", lambda e, name=name: read_pixels(e, e.url + name, question="?"), same_as_file(name)) for name in FILES),
    ("image-to-text-base64", lambda e: read_pixels(e, base64.b64encode((e.root / "www/rgba.png").read_bytes()).decode()), same_as_file("rgba.png")),
    ("image-to-text-url-in-chat", lambda e: read_pixels(e, _Conversation(user({"type": "image", "url": e.url + "grey16.png"}))), same_as_file("grey16.png")),
    ("image-to-text-silent-server", lambda e: e.reader(e.silent_url, timeout=0.3), Raises(TimeoutError, r"did not answer within `timeout`=0\.3 s")),
    ("image-to-text-silent-server-in-chat", lambda e: e.reader(user({"type": "image", "url": e.silent_url}), timeout=0.3), Raises(TimeoutError, "`timeout`")),
    ("image-to-text-refused-connection", lambda e: e.reader(e.closed_url), Raises(OSError, "could not be fetched")),
    ("ip-url-404", lambda e: ip(e, e.url + "missing.png"), Raises(OSError, "missing.png could not be fetched")),
    ("ip-url-not-an-image", lambda e: ip(e, e.url + "not_an_image.png"), Raises(V, "not_an_image.png' is not a readable image")),
    ("ip-url-without-host", lambda e: ip(e, "http://"), Raises(V, "is not a valid URL")),
    ("image-to-text-missing-file", lambda e: e.reader("no/such/file.png"), Raises(V, "the path of an image file or a base64")),
    ("image-to-text-base64-of-text", lambda e: e.reader(base64.b64encode(b"hello there").decode()), Raises(V, "read as base64.*not a readable image")),
    # chat messages
    ("chat-unknown-item-type", lambda e: chat(e, user({"type": "audio", "audio": "a.wav"})), Raises(V, "'audio'")),
    ("chat-item-without-type", lambda e: chat(e, user({"text": "no type"})), Raises(V, "'type' 'text', 'image' or 'video'")),
    ("chat-video-without-source", lambda e: chat(e, user({"type": "video"})), Raises(V, "must give its video under one key")),
    ("chat-video-missing-file", lambda e: chat(e, user({"type": "video", "video": "a.mp4"})), Raises(V, "the video of item 0 of message 0 .* path of a video file")),
    ("chat-video-num-frames-0", lambda e: chat(e, user({"type": "video", "video": [image()], "num_frames": 0})), Raises(V, "'num_frames' of video item 0")),
    ("chat-content-int", lambda e: chat(e, [{"role": "user", "content": 5}]), Raises(T, "string or a list of items")),
    ("chat-content-one-dict", lambda e: chat(e, [{"role": "user", "content": {"type": "text", "text": "hi"}}]), Raises(T, "got dict")),
    ("chat-content-strings", lambda e: chat(e, user("hi", "there")), Raises(T, "must be a dict")),
    ("chat-one-message-not-a-list", lambda e: chat(e, {"role": "user", "content": "hi"}), Raises(T, "list of messages")),
    ("chat-a-string", lambda e: chat(e, "hi"), Raises(T, "list of messages")),
    ("chat-empty", lambda e: chat(e, []), Raises(V, "at least one message")),
    ("chat-empty-batch-item", lambda e: chat(e, [[]]), Raises(V, "at least one message")),
    ("chat-no-content", lambda e: chat(e, [{"role": "user"}]), Raises(V, "no 'content'")),
    ("chat-unknown-role", lambda e: chat(e, [{"role": "tool", "content": "x"}]), Raises(V, "role")),
    ("chat-late-system", lambda e: chat(e, [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]), Raises(V, "role")),
    ("chat-text-not-a-string", lambda e: chat(e, user({"type": "text", "text": 3})), Raises(T, "string 'text'")),
    ("chat-batch-holding-an-int", lambda e: chat(e, [[{"role": "user", "content": "a"}], 5]), Raises(T, "lists of messages")),
    ("chat-codes-out-of-range", lambda e: chat(e, user({"type": "image", "codes": [10_000] * 32})), Raises(V, "must lie in")),
    ("chat-codes-too-few", lambda e: chat(e, user({"type": "image", "codes": [1] * 31})), Raises(V, "must have shape")),
    ("chat-codes-a-string", lambda e: chat(e, user({"type": "image", "codes": "abc"})), Raises(T, "codes of a chat image must be")),
    ("chat-codes-floats", lambda e: chat(e, user({"type": "image", "codes": [1.5] * 32})), Raises(V, "must hold integers")),
    ("chat-image-an-int", lambda e: chat(e, user({"type": "image", "image": 5}), tokenize=True), Raises(T, "int")),
    *((f"chat-forged-{text}", lambda e, text=text: chat(e, [{"role": "user", "content": f"is {text}?"}], tokenize=True), Works(no_control_tokens)) for text in FORGERIES),
    ("chat-unknown-template", lambda e: chat(e, user({"type": "text", "text": "hi"}), chat_template="vicunna"), Raises(V, "vicunna")),
    # text and codes
    ("format-image-none", lambda e: e.processor.format_image(None), Raises(T, "image_codes must be a tensor")),
    ("format-image-string", lambda e: e.processor.format_image("abc"), Raises(T, "image_codes must be a tensor")),
    ("format-image-floats", lambda e: e.processor.format_image([1.5] * 32), Raises(V, "image_codes must hold integers")),
    ("format-image-31-codes", lambda e: e.processor.format_image([1] * 31), Raises(V, "image_codes must have shape")),
    ("format-image-code-64", lambda e: e.processor.format_image([64] * 32), Raises(V, r"image_codes must lie in \[0, 64\)")),
    ("format-image-code--1", lambda e: e.processor.format_image([-1] * 32), Raises(V, "image_codes must lie in")),
    ("format-image-two-images", lambda e: e.processor.format_image([[1] * 32] * 2), Raises(V, "must be one image")),
    ("check-codes-none", lambda e: e.layout.check_codes(None), Raises(T, "image_codes must be a tensor, array or list of ints")),
    ("check-codes-dict", lambda e: e.layout.check_codes({"a": 1}), Raises(T, "image_codes must be a tensor")),
    ("check-codes-ragged", lambda e: e.layout.check_codes([[1, 2], [3]], argument="codes"), Raises(T, "codes must be a tensor")),
    ("check-codes-bool", lambda e: e.layout.check_codes(torch.ones(32, dtype=bool)), Raises(V, "image_codes must hold integer codes")),
    ("parse-negative-ids", lambda e: e.processor.parse_generation([5, -1]), Raises(V, "non-negative")),
    ("processor-empty-text-list", lambda e: e.processor(text=[]), Raises(V, "non-empty list")),
    ("processor-malformed-image-text", lambda e: e.processor(text="<img>"), Raises(V, "malformed image")),
    ("processor-video-num-frames-0", lambda e: e.processor(text="<video>", videos=[image()], num_frames=0), Raises(V, "`num_frames` must be a positive int")),
    ("processor-video-num-frames-float", lambda e: e.processor(text="<video>", videos=[image()], num_frames=2.0), Raises(T, "`num_frames` must be a positive int")),
    ("processor-video-mark-without-video", lambda e: e.processor(text="<video>"), Raises(V, "marks 1 videos with <video>, but 0 were passed in `videos`")),
    ("processor-video-without-mark", lambda e: e.processor(text="hi", videos=[image()]), Raises(V, "marks 0 videos with <video>, but 1 were passed")),
    ("processor-video-no-frames", lambda e: e.processor(text="<video>", videos=np.zeros((0, 8, 8, 3), np.uint8)), Raises(V, "video 0 of `videos` has no frames")),
    ("processor-video-mixed-sizes", lambda e: e.processor(text="<video>", videos=[image(0, 20, 20), image(1, 10, 20)]), Raises(V, "must all have one size")),
    ("processor-video-an-int", lambda e: e.processor(text="<video>", videos=5), Raises(T, "video 0 of `videos` must be a list of frames")),
    ("processor-video-url-404", lambda e: e.processor(text="<video>", videos=e.url + "missing.mp4"), Raises(OSError, "missing.mp4 could not be fetched"), NEEDS_PYAV),
    # SEED-LLaMA and the SEED tokenizer
    ("model-id-negative", lambda e: e.model(torch.tensor([[1, -1]])), Raises(V, r"input_ids must be token ids in \[0, ")),
    ("model-id-past-vocabulary", lambda e: e.model(torch.tensor([[1, 10_000]])), Raises(V, r"input_ids must be token ids in \[0, ")),
    ("model-float-ids", lambda e: e.model(torch.tensor([[1.0, 2.0]])), Raises((T, V), "input_ids")),
    ("generate-id-past-vocabulary", lambda e: generate(e, torch.tensor([[1, 10_000]])), Raises(V, "input_ids must be token ids")),
    ("generate-nan-pixel-values", lambda e: e.model.generate(**{**image_prompt(e), "pixel_values": pixel_values(e, NAN)}, max_new_tokens=2), Raises(V, "pixel_values must be finite")),
    *((f"generate-image-guidance-{scale}", lambda e, scale=scale: generate(e, image_guidance_scale=scale), Raises(V, "image_guidance_scale must be a positive finite number")) for scale in (NAN, INF, 0.0, -2.0)),
    ("generate-force-image-no-room", lambda e: generate(e, force_image=True, max_new_tokens=20), Raises(V, "room for a whole image")),
    ("generate-long-prompt-no-room", lambda e: generate(e, torch.full((1, 250), 5), force_image=True, max_new_tokens=40), Raises(V, "room for a whole image")),
    ("generate-force-image-suppressed", lambda e: generate(e, force_image=True, suppress_tokens=[e.model.config.boi_token_id], max_new_tokens=40), Raises(V, "suppress_tokens forbids")),
    ("generate-max-new-tokens-0", lambda e: generate(e, max_new_tokens=0), Raises(V, "max_new_tokens")),
    ("generate-max-new-tokens--1", lambda e: generate(e, max_new_tokens=-1), Raises(V, "max_new_tokens")),
    ("generate-max-new-tokens-abc", lambda e: generate(e, max_new_tokens="abc"), Raises((T, V), "max_new_tokens")),
    ("generate-image-to-text", lambda e: e.model.generate(**image_prompt(e), max_new_tokens=3, do_sample=False), Works(lambda ids, e: ids.shape[0] == 1)),
    *((f"encode-{value}-pixels", lambda e, value=value: e.model.visual_tokenizer.encode(pixel_values(e, value)), Raises(V, "pixel_values must be finite")) for value in (NAN, INF, -INF)),
    # the de-tokenizer
    *((f"detokenizer-{value}-embeds", lambda e, value=value: decode(e, image_embeds=embeds(e, value)), Raises(V, "`image_embeds` must hold finite numbers")) for value in (NAN, INF)),
    ("detokenizer-nan-negative-embeds", lambda e: decode(e, image_embeds=embeds(e), negative_image_embeds=embeds(e, NAN)), Raises(V, "`negative_image_embeds` must hold finite")),
    ("detokenizer-embeds-wrong-width", lambda e: decode(e, image_embeds=torch.zeros(1, 3)), Raises(V, "`image_embeds` must have shape")),
    ("detokenizer-embeds-numpy", lambda e: decode(e, image_embeds=np.zeros((1, 16))), Raises(T, "`image_embeds` must be a torch.Tensor")),
    ("detokenizer-codes-and-embeds", lambda e: decode(e, image_codes=codes(), image_embeds=embeds(e)), Raises(V, "exactly one of `image_codes`")),
    ("detokenizer-none", lambda e: e.detokenizer(image_codes=None), Raises(V, "exactly one of `image_codes` and `image_embeds`")),
    ("detokenizer-float-codes", lambda e: decode(e, image_codes=codes(dtype=torch.float32)), Raises(V, "`image_codes` must hold integer codes")),
    ("detokenizer-code-64", lambda e: decode(e, image_codes=codes(value=64)), Raises(V, r"`image_codes` must hold codes in \[0, 64\)")),
    ("detokenizer-code--1", lambda e: decode(e, image_codes=codes(value=-1)), Raises(V, "`image_codes` must hold codes in")),
    ("detokenizer-31-codes", lambda e: decode(e, image_codes=codes(1, 31)), Raises(V, r"`image_codes` must have shape \[batch, 32\]")),
    ("detokenizer-3-d-codes", lambda e: decode(e, image_codes=codes(1, 1, 32)), Raises(V, "`image_codes` must have shape")),
    ("detokenizer-negative-other-batch", lambda e: decode(e, negative_image_codes=codes(2, 32)), Raises(V, "`negative_image_codes` must have one row per")),
    ("detokenizer-string-codes", lambda e: decode(e, image_codes=["1"] * 32), Raises(T, "`image_codes`.*list holding str")),
    ("detokenizer-empty-codes", lambda e: decode(e, image_codes=[]), Raises(T, r"`image_codes`.*\(empty\)")),
    ("detokenizer-codes-a-string", lambda e: decode(e, image_codes="abc"), Raises(T, "`image_codes` must be a LongTensor")),
    ("detokenizer-ragged-codes", lambda e: decode(e, image_codes=[[1] * 32, [1] * 31]), Raises(V, "`image_codes`.*shapes")),
    ("detokenizer-object-array", lambda e: decode(e, image_codes=np.array([["a"] * 32], dtype=object)), Raises(T, "`image_codes`.*dtype object")),
    *((f"detokenizer-steps-{steps!r}", lambda e, steps=steps: decode(e, num_inference_steps=steps), Raises(V, "`num_inference_steps` must be a positive integer")) for steps in (0, -1, "abc", 1.5, True)),
    *((f"detokenizer-guidance-{scale!r}", lambda e, scale=scale: decode(e, guidance_scale=scale), Raises(V, "`guidance_scale` must be a finite number")) for scale in (NAN, INF, "abc")),
    *((f"detokenizer-noise-level-{level!r}", lambda e, level=level: decode(e, noise_level=level), Raises(V, r"`noise_level` must be (an integer )?in \[0, 999\]")) for level in (-1, 1000, 1.5, "abc")),
    *((f"detokenizer-height-{height!r}", lambda e, height=height: decode(e, height=height), Raises(V, "`height` must be a positive multiple of the VAE scale")) for height in (7, 0, "abc")),
    ("detokenizer-images-per-prompt-0", lambda e: decode(e, num_images_per_prompt=0), Raises(V, "`num_images_per_prompt` must be a positive integer")),
    ("detokenizer-generator-a-string", lambda e: decode(e, generator="abc"), Raises(T, "`generator` must be a torch.Generator")),
    ("detokenizer-too-few-generators", lambda e: decode(e, image_codes=codes(2, 32), generator=[torch.Generator()]), Raises(V, "list of 1 generators but 2 images")),
    ("detokenizer-output-jpg", lambda e: decode(e, output_type="jpg"), Raises(V, "`output_type` must be one of")),
    *((f"detokenizer-eta-{eta!r}", lambda e, eta=eta: decode(e, eta=eta), Raises(V, "`eta` must be a non-negative number")) for eta in (NAN, -1.0)),
    ("detokenizer-latents-wrong-shape", lambda e: decode(e, latents=torch.zeros(1, 4, 3, 3)), Raises(V, "`latents` must have shape")),
    ("detokenizer-latents-an-array", lambda e: decode(e, latents=np.zeros((1, 4, 8, 8))), Raises(T, "`latents` must be a torch.Tensor")),
    ("detokenizer-unknown-callback-tensor", lambda e: decode(e, callback_on_step_end_tensor_inputs=["noise"]), Raises(V, "`callback_on_step_end_tensor_inputs` must be among")),
    ("detokenizer-codes-as-lists", lambda e: seeded_decode(e, image_codes=[[3] * 32]), same_as(lambda e: seeded_decode(e, image_codes=codes(value=3)))),
    ("detokenizer-codes-as-numpy", lambda e: seeded_decode(e, image_codes=np.full((1, 32), 3)), same_as(lambda e: seeded_decode(e, image_codes=codes(value=3)))),
    # the pipelines
    ("text-to-image-empty-list", lambda e: e.drawer([]), Raises(V, "non-empty list")),
    ("image-to-text-empty-list", lambda e: e.reader([]), Raises(V, "non-empty list")),
    ("text-to-image-int", lambda e: e.drawer(5), Raises(V, "`prompts` must be a string")),
    ("text-to-image-none", lambda e: e.drawer(None), Raises(V, "`prompts` must be a string")),
    ("text-to-image-list-with-int", lambda e: e.drawer(["a", 5]), Raises(V, r"items of type \['int'\]")),
    ("text-to-image-dict", lambda e: e.drawer({"prompt": "a"}), Raises(V, "`prompts` must be a string")),
    ("image-to-text-int", lambda e: e.reader(5), Raises(V, "inputs must be an image")),
    ("image-to-text-dict-without-image", lambda e: e.reader({"question": "x"}), Raises(V, "needs an 'image' key")),
    *((f"text-to-image-seed-{seed!r}", lambda e, seed=seed: e.drawer("a cat", seed=seed, **DRAW), Raises(V, "`seed` must be an int")) for seed in ("abc", True, 1.5)),
    ("image-to-text-seed-abc", lambda e: e.reader(image(), seed="abc"), Raises(V, "`seed` must be an int")),
    ("text-to-image-seed-and-generator", lambda e: e.drawer("a", seed=0, generator=torch.Generator()), Raises(V, "`seed` or `generator`, not both")),
    ("text-to-image-generator-abc", lambda e: e.drawer("a", generator="abc"), Raises(V, "`generator` must be a torch.Generator")),
    ("text-to-image-too-few-generators", lambda e: e.drawer(["a", "b"], generator=[torch.Generator()]), Raises(V, "list of 1 generators but 2 inputs")),
    *((f"text-to-image-batch-size-{size!r}", lambda e, size=size: e.drawer(["a", "b"], batch_size=size, seed=0, **DRAW), Raises(V, "batch_size")) for size in (0, -1, "abc")),
    ("text-to-image-two-answers", lambda e: e.drawer("a", num_return_sequences=2), Raises(V, "`num_return_sequences` must be 1")),
    ("text-to-image-images-per-prompt-0", lambda e: e.drawer("a", num_images_per_prompt=0), Raises(V, "`num_images_per_prompt` must be a positive")),
    ("text-to-image-output-jpg", lambda e: e.drawer("a", output_type="jpg"), Raises(V, "`output_type` must be one of")),
    ("text-to-image-force-image-str", lambda e: e.drawer("a", force_image="no"), Raises(V, "`force_image` must be a bool, got str")),
    ("text-to-image-force-image-twice", lambda e: e.drawer("a", force_image=False, generate_kwargs={"force_image": True}), Raises(V, "pass `force_image` once")),
    ("text-to-image-both-guidances", lambda e: e.drawer("a", guidance_scale=2.0, decoder_guidance_scale=2.0), Raises(V, "not both")),
    ("text-to-image-unknown-template", lambda e: e.drawer("a", chat_template="vicunna"), Raises(V, "`chat_template` must name one of")),
    ("text-to-image-negative-no-guidance", lambda e: e.drawer("a", negative_prompt="blur"), Raises(V, "pass `image_guidance_scale`")),
    ("text-to-image-negative-prompt-int", lambda e: e.drawer("a", negative_prompt=5, image_guidance_scale=2.0), Raises(V, "`negative_prompt` must be a string")),
    ("text-to-image-nan-image-guidance", lambda e: e.drawer("a", seed=0, image_guidance_scale=NAN, **DRAW), Raises(V, "image_guidance_scale must be a positive finite")),
    *((f"text-to-image-steps-{steps!r}", lambda e, steps=steps: e.drawer("a", seed=0, max_new_tokens=34, num_inference_steps=steps), Raises(V, "`num_inference_steps` must be a positive integer")) for steps in (0, -1, "abc")),
    ("text-to-image-nan-decoder-guidance", lambda e: e.drawer("a", seed=0, guidance_scale=NAN, **DRAW), Raises(V, "`guidance_scale` must be a finite number")),
    *((f"image-to-text-timeout-{timeout!r}", lambda e, timeout=timeout: e.reader(image(), timeout=timeout), Raises(V, "`timeout` must be a positive number of seconds")) for timeout in (0, -1, "10", True, NAN, INF)),
    ("image-to-text-force-image", lambda e: e.reader(image(), force_image=True), Raises(V, "`force_image`")),
    ("image-to-text-question-int", lambda e: e.reader(image(), question=5), Raises(V, "`question` must be a string")),
    ("image-to-text-question-and-text", lambda e: e.reader(image(), question="a", text="b"), Raises(V, "`question` or `text`")),
    ("image-to-text-question-with-chat", lambda e: e.reader(user({"type": "text", "text": "hi"}), question="a"), Raises(V, "a conversation holds its own text")),
    ("image-to-text-images-twice", lambda e: e.reader(image(), images=image(1)), Raises(V, "positionally or as `images=`, not both")),
    ("image-to-text-seeded-beams", lambda e: e.reader(image(), seed=0, num_beams=2, max_new_tokens=4), Raises(V, "cannot seed beam sampling")),
    ("image-to-text-works", lambda e: e.reader(str(e.root / "www/rgba.png"), seed=0, max_new_tokens=3), Works(lambda out, e: isinstance(out[0]["generated_text"], str))),
    ("text-to-image-works", lambda e: e.drawer("a red square", seed=0, **DRAW), Works(lambda out, e: [i.size for i in out["images"]] == [(16, 16)])),
    # loading
    ("load-missing-folder", lambda e: AutoModel.from_pretrained(str(e.root / "missing")), Raises(OSError, "missing")),
    ("load-truncated-llm-weights", lambda e: AutoModel.from_pretrained(checkpoint_copy(e, "cut", lambda f: truncate(f / "model.safetensors"))), Raises(OSError, "truncated or corrupt")),
    ("load-truncated-tokenizer-weights", lambda e: AutoModel.from_pretrained(checkpoint_copy(e, "cut2", lambda f: truncate(f / "visual_tokenizer/model.safetensors")) / "visual_tokenizer"), Raises(OSError, "truncated or corrupt")),
    ("load-unknown-model-type", lambda e: AutoModel.from_pretrained(checkpoint_copy(e, "type", edit_config(model_type="seed_lama", auto_map=None))), Raises(V, "seed_lama")),
    ("load-missing-config-key", lambda e: AutoModel.from_pretrained(checkpoint_copy(e, "key", edit_config(boi_token_id=None))), Raises(V, "boi_token_id")),
    ("load-missing-visual-tokenizer", lambda e: AutoModel.from_pretrained(checkpoint_copy(e, "no-vt", lambda f: shutil.rmtree(f / "visual_tokenizer"))).visual_tokenizer, Raises(OSError, "no component folder 'visual_tokenizer'")),
    ("load-missing-detokenizer", lambda e: pipeline("seed-text-to-image", model=str(checkpoint_copy(e, "no-dt", lambda f: shutil.rmtree(f / "detokenizer")))).detokenizer, Raises(OSError, "no component folder 'detokenizer'")),
    ("load-detokenizer-missing-folder", lambda e: SeedUnCLIPPipeline.from_pretrained(str(e.root / "missing")), Raises((V, OSError), "missing")),
    ("load-pipeline-non-seed-model", lambda e: pipeline("seed-text-to-image", model=e.model.visual_tokenizer, processor=e.processor), Raises(V, "needs a SEED-LLaMA model")),
    # saving
    ("save-model-keeps-unrelated-files", lambda e: save_into_existing(e, "saved-model", e.model.save_pretrained), Works(keeps_unrelated_files)),
    ("save-processor-keeps-unrelated-files", lambda e: save_into_existing(e, "saved-processor", e.processor.save_pretrained), Works(keeps_unrelated_files)),
    ("save-detokenizer-keeps-unrelated-files", lambda e: save_into_existing(e, "saved-detokenizer", e.detokenizer.save_pretrained), Works(keeps_unrelated_files)),
    ("cli-overwrite-of-the-input-refused", lambda e: run_cli("convert-llama", e.release, e.release, "--num-image-codes", 64, "--overwrite"), exits(2, "holds the input")),
    ("cli-existing-output-refused", lambda e: run_cli("convert-llama", e.release, e.root / "existing", "--num-image-codes", 64), exits(1, "exists; pass overwrite=True")),
    ("cli-refusal-keeps-the-folder", lambda e: run_cli("convert-llama", e.release, e.root / "existing", "--num-image-codes", 64), Works(keeps_unrelated_files)),
    # the command line
    ("cli-no-command", lambda e: run_cli(), exits(2, "error:")),
    ("cli-unknown-command", lambda e: run_cli("paint"), exits(2, "invalid choice")),
    ("cli-command-without-arguments", lambda e: run_cli("convert-llama"), exits(2, "required")),
    ("cli-missing-checkpoint", lambda e: run_cli("convert-tokenizer", e.root / "missing.pt", e.root / "out"), exits(1, "checkpoint not found")),
    *((f"cli-checkpoint-{name}", lambda e, name=name: run_cli("convert-tokenizer", e.root / name, e.root / "out"), exits(2, "is not a readable PyTorch checkpoint")) for name in ("empty.pt", "garbage.pt")),
    ("cli-bad-config-json", lambda e: run_cli("convert-tokenizer", e.root / "empty.pt", "out", "--config", e.root / "bad.json"), exits(2, "Expecting property name")),
    ("cli-missing-config-json", lambda e: run_cli("convert-tokenizer", e.root / "empty.pt", "out", "--config", e.root / "no.json"), exits(1, "no.json")),
    ("cli-convert-llama-missing-input", lambda e: run_cli("convert-llama", e.root / "missing", e.root / "out"), exits(1, "has no config.json")),
    ("cli-convert-llama-wrong-code-count", lambda e: run_cli("convert-llama", e.release, e.root / "out", "--num-image-codes", 12), exits(2, "expected 12 image tokens")),
    ("cli-convert-llama-count-abc", lambda e: run_cli("convert-llama", e.release, e.root / "out", "--num-image-codes", "abc"), exits(2, "invalid int value")),
    ("cli-evaluate-not-a-checkpoint", lambda e: run_cli("evaluate-shapes", "--model", e.root / "www", "--output-dir", e.root / "o"), exits(2, "`model_dir` must be a SEED checkpoint")),
    ("cli-train-llm-missing-recipe", lambda e: run_cli("train-llm", "--recipe", e.root / "missing.yaml"), exits(2, "neither a file nor a shipped recipe")),
    ("cli-train-llm-malformed-recipe", lambda e: run_cli("train-llm", "--recipe", e.root / "bad.yaml"), exits(2, "bad.yaml")),
    ("cli-main-seed-abc", lambda e: run_cli("main", "--seed", "abc"), exits(2, "invalid int value")),
]
# fmt: on
CORPUS = [pytest.param(call, outcome, id=row_id, marks=marks) for row_id, call, outcome, *marks in ROWS]


def test_the_corpus_covers_the_issue():
    assert len(CORPUS) >= 145 and len({row_id for row_id, *_ in ROWS}) == len(ROWS)


@pytest.mark.parametrize("call, outcome", CORPUS)
def test_bad_input(env, call, outcome):
    if isinstance(outcome, Raises):
        with pytest.raises(outcome.error, match=outcome.match) as caught:
            call(env)
        assert str(caught.value).strip(), "the error has no message"
    else:
        outcome.check(call(env), env)


# ------------------------------------------------------------------------------------- per-call state (threads)
def _in_threads(*jobs: Callable[[], object]) -> list:
    results = [None] * len(jobs)

    def run(index: int) -> None:
        results[index] = jobs[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_interrupting_one_threads_call_leaves_another_threads_call_running(env):
    """`pipe._interrupt = True` in a step callback (diffusers' convention) stops that call only: a call running at
    the same time in another thread on the same pipeline takes every step and draws what it draws alone."""
    both_started = threading.Barrier(2)
    steps = {"interrupted": [], "running": []}

    def draw(name: str, interrupt: bool):
        def on_step_end(pipe, step, timestep, callback_kwargs):
            steps[name].append((step, pipe.interrupt))
            if step == 0:
                both_started.wait(timeout=60)  # the other call is under way before this one goes on
                pipe._interrupt = interrupt
            return {}

        return seeded_decode(env, num_inference_steps=4, callback_on_step_end=on_step_end)

    alone = seeded_decode(env, num_inference_steps=4)
    interrupted, running = _in_threads(lambda: draw("interrupted", True), lambda: draw("running", False))
    assert steps == {"interrupted": [(0, False)], "running": [(step, False) for step in range(4)]}
    torch.testing.assert_close(running, alone)
    assert not torch.equal(interrupted, alone)
    assert not env.detokenizer.interrupt  # this thread's state, untouched by the others
    torch.testing.assert_close(seeded_decode(env, num_inference_steps=4), alone)  # a new call starts afresh


def test_guidance_scale_and_step_count_properties_are_the_calling_threads(env):
    seen = {}

    def draw(scale: float, num_steps: int):
        def on_step_end(pipe, step, timestep, callback_kwargs):
            seen[scale] = (pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps)
            return {}

        return decode(
            env, guidance_scale=scale, num_inference_steps=num_steps, callback_on_step_end=on_step_end
        )

    _in_threads(lambda: draw(1.0, 2), lambda: draw(7.5, 3))
    assert seen == {1.0: (1.0, False, 2), 7.5: (7.5, True, 3)}
