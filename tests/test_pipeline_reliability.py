"""Reliability of the pipelines: one pipeline object serving concurrent threads (as a web server does), clear
errors for inputs that used to give silent wrong results or crashes, and `seed-image-to-text` reading an image
file or URL as the processor's chat path reads the image (alpha, 16-bit), with a bounded wait on URLs."""

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image
from seed_unclip_fixtures import save_tiny_seed_checkpoint, tiny_seed_unclip_pipeline
from transformers import pipeline

import seed_hf  # noqa: F401  (registers the tasks)
from seed_hf.modeling.generation_seed_llama import SeedGeneratorSamplingLogitsProcessor
from seed_hf.pipelines.text_to_image import _Item

IMAGE_TOKENS = 34  # <img> + 32 codes + </img>
DRAW = {"max_new_tokens": IMAGE_TOKENS, "num_inference_steps": 3}
THREADS, CALLS_PER_THREAD = 4, 3
QUESTION = "What is it?"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny_seed_checkpoint(tmp_path_factory.mktemp("seed") / "checkpoint")


@pytest.fixture(scope="module")
def drawer(checkpoint):
    drawer = pipeline("seed-text-to-image", model=checkpoint, device="cpu")
    # DPM-Solver keeps the most state between steps (its model outputs and step index)
    detokenizer = drawer.detokenizer
    detokenizer.scheduler = DPMSolverMultistepScheduler.from_config(detokenizer.scheduler.config)
    return drawer


@pytest.fixture(scope="module")
def reader(checkpoint):
    return pipeline("seed-image-to-text", model=checkpoint, device="cpu")


def _image(seed: int, size: int = 20, channels: int = 3) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, channels), np.uint8))


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _in_threads(call, jobs: list) -> list:
    """`call(job)` for every job, `CALLS_PER_THREAD` jobs in each of `THREADS` threads started together."""
    start = threading.Barrier(THREADS)

    def run_thread(thread_jobs):
        start.wait()
        return [call(job) for job in thread_jobs]

    chunks = [jobs[i : i + CALLS_PER_THREAD] for i in range(0, len(jobs), CALLS_PER_THREAD)]
    with ThreadPoolExecutor(THREADS) as pool:
        return [result for chunk in pool.map(run_thread, chunks) for result in chunk]


# ---------------------------------------------------------------------------------------------------------------
# one pipeline, many threads


def test_threads_sharing_a_text_to_image_pipeline_get_the_sequential_drawings(drawer):
    jobs = [(f"prompt number {n}", 100 + n) for n in range(THREADS * CALLS_PER_THREAD)]

    def draw(job):
        prompt, seed = job
        return drawer(prompt, seed=seed, **DRAW)

    sequential = [draw(job) for job in jobs]
    concurrent = _in_threads(draw, jobs)
    for alone, together in zip(sequential, concurrent, strict=True):
        torch.testing.assert_close(alone["image_codes"][0], together["image_codes"][0])
        np.testing.assert_allclose(_pixels(alone["images"][0]), _pixels(together["images"][0]), atol=1)


def test_threads_sharing_an_image_to_text_pipeline_get_the_sequential_answers(reader):
    jobs = [(_image(n), 200 + n) for n in range(THREADS * CALLS_PER_THREAD)]

    def answer(job):
        image, seed = job
        return reader(image, seed=seed, max_new_tokens=12)[0]["generated_text"]

    sequential = [answer(job) for job in jobs]
    assert (
        len(set(sequential)) > 1
    )  # the seeds sample different answers: the comparison below means something
    assert _in_threads(answer, jobs) == sequential


def test_seeded_sampling_leaves_the_global_random_state_alone(reader):
    before = torch.random.get_rng_state()
    first = reader(_image(0), seed=3, max_new_tokens=24)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(12345)  # another global state does not change a seeded answer
    assert reader(_image(0), seed=3, max_new_tokens=24) == first


def test_generator_sampling_draws_from_the_softmax_of_the_scores():
    """Gumbel-max under a generator: the greedy choice over the perturbed scores samples softmax(scores)."""
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))
    sampler = SeedGeneratorSamplingLogitsProcessor(torch.Generator().manual_seed(0))
    draws = torch.stack([sampler(None, scores).argmax(dim=-1) for _ in range(4000)]).flatten()
    frequencies = torch.bincount(draws, minlength=4).double() / len(draws)
    torch.testing.assert_close(
        frequencies, torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.double), atol=0.03, rtol=0
    )
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        SeedGeneratorSamplingLogitsProcessor(0)


def test_seeding_beam_sampling_is_refused(reader):
    with pytest.raises(ValueError, match="cannot seed beam sampling"):
        reader(_image(0), seed=0, num_beams=2, max_new_tokens=4)


# ---------------------------------------------------------------------------------------------------------------
# clear errors instead of silent wrong results


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_detokenizer_refuses_non_finite_embeddings(value):
    detokenizer = tiny_seed_unclip_pipeline()
    embeds = torch.zeros(1, detokenizer.embedding_dim)
    embeds[0, 3] = value
    with pytest.raises(ValueError, match="`image_embeds` must hold finite numbers"):
        detokenizer(image_embeds=embeds, num_inference_steps=1)
    with pytest.raises(ValueError, match="`negative_image_embeds` must hold finite numbers"):
        detokenizer(
            image_embeds=torch.zeros_like(embeds), negative_image_embeds=embeds, num_inference_steps=1
        )


@pytest.mark.parametrize("seed", ["abc", True, 1.5])
def test_seeds_that_are_not_ints_are_refused(drawer, reader, seed):
    with pytest.raises(ValueError, match="`seed` must be an int"):
        drawer("a cat", seed=seed, **DRAW)
    with pytest.raises(ValueError, match="`seed` must be an int"):
        reader(_image(0), seed=seed)


def test_empty_lists_and_string_codes_are_refused(drawer, reader):
    with pytest.raises(ValueError, match="non-empty list"):
        drawer([])
    with pytest.raises(ValueError, match="non-empty list"):
        reader([])
    with pytest.raises(TypeError, match="`image_codes`.*list holding str"):
        drawer.detokenizer(image_codes=["1"] * 32)
    with pytest.raises(TypeError, match="`image_codes`.*empty"):
        drawer.detokenizer(image_codes=[])


def test_image_to_text_refuses_force_image(reader):
    with pytest.raises(ValueError, match="`force_image`.*seed-image-to-text answers in text"):
        reader(_image(0), seed=0, force_image=True, max_new_tokens=40)


def test_nan_image_guidance_scale_is_refused_as_the_model_refuses_it(drawer, reader):
    with pytest.raises(ValueError, match="image_guidance_scale must be a positive finite number, got nan"):
        drawer("a cat", seed=0, image_guidance_scale=float("nan"), **DRAW)
    with pytest.raises(ValueError, match="image_guidance_scale must be a positive finite number, got nan"):
        reader(_image(0), seed=0, image_guidance_scale=float("nan"), max_new_tokens=4)


@pytest.mark.parametrize("steps", [0, -1])
def test_non_positive_inference_steps_are_refused(drawer, steps):
    with pytest.raises(ValueError, match="`num_inference_steps` must be a positive integer"):
        drawer("a cat", seed=0, max_new_tokens=IMAGE_TOKENS, num_inference_steps=steps)


@pytest.mark.parametrize("timeout", [0, -1, "10", True, float("nan")])
def test_bad_timeouts_are_refused(reader, timeout):
    with pytest.raises(ValueError, match="`timeout` must be a positive number of seconds"):
        reader(_image(0), timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# images read as the chat path reads them


def _chat_pixels(reader, image: Image.Image) -> torch.Tensor:
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]
    inputs = reader.processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt"
    )
    return inputs["pixel_values"]


def _rgba_image() -> Image.Image:
    rgba = _image(1, channels=4)
    alpha = np.asarray(rgba).copy()
    alpha[..., 3] = np.linspace(0, 255, alpha.shape[1], dtype=np.uint8)  # from transparent to opaque
    return Image.fromarray(alpha, "RGBA")


def _sixteen_bit_image() -> Image.Image:
    levels = np.random.default_rng(2).integers(0, 65535, (20, 20)).astype(np.uint16)
    return Image.fromarray(levels)  # uint16: mode I;16


@pytest.mark.parametrize("make_image", [_rgba_image, _sixteen_bit_image], ids=["rgba", "16-bit"])
def test_image_files_and_pil_images_reach_the_processor_as_in_the_chat_path(reader, tmp_path, make_image):
    path = tmp_path / "image.png"
    make_image().save(path)
    expected = _chat_pixels(reader, Image.open(path))
    for image in (str(path), Image.open(path)):
        pixels = reader.preprocess(_Item(image, 0), question=QUESTION)["pixel_values"]
        torch.testing.assert_close(pixels, expected, atol=0, rtol=0)
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image", "image": Image.open(path)}, {"type": "text", "text": QUESTION}],
        }
    ]
    answer = reader(str(path), question=QUESTION, seed=0, max_new_tokens=12)[0]["generated_text"]
    assert answer == reader(conversation, seed=0, max_new_tokens=12)[0]["generated_text"]


def test_exif_orientation_is_treated_alike_for_paths_and_pil_images(reader, tmp_path):
    path = tmp_path / "rotated.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    _image(3, size=24).crop((0, 0, 24, 16)).save(path, exif=exif)
    expected = _chat_pixels(reader, Image.open(path))
    for image in (str(path), Image.open(path)):
        pixels = reader.preprocess(_Item(image, 0), question=QUESTION)["pixel_values"]
        torch.testing.assert_close(pixels, expected, atol=0, rtol=0)


def test_base64_images_are_still_read(reader, tmp_path):
    import base64

    path = tmp_path / "image.png"
    _image(4).save(path)
    encoded = base64.b64encode(path.read_bytes()).decode()
    expected = reader.preprocess(_Item(str(path), 0), question=QUESTION)["pixel_values"]
    for source in (encoded, f"data:image/png;base64,{encoded}"):
        torch.testing.assert_close(
            reader.preprocess(_Item(source, 0), question=QUESTION)["pixel_values"], expected
        )
    with pytest.raises(ValueError, match="URL, the path of an image file or a base64-encoded image"):
        reader("no/such/file.png")


def test_an_image_url_that_never_answers_times_out(reader):
    """A local server that accepts the connection and never answers: the read gives up after `timeout`."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    acceptor.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/image.png"
    try:
        with pytest.raises(TimeoutError, match=r"did not answer within `timeout`=0\.5 s"):
            reader(url, timeout=0.5)
    finally:
        for connection in accepted:
            connection.close()
        server.close()
