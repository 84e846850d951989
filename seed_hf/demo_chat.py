"""The model side of the SEED chat demo ([`~seed_hf.demo`]): [`SeedChat`] loads a SEED checkpoint once and answers
the turns of every session; a [`ChatSession`] keeps one conversation, each image as its 32 SEED codes.

How a turn decides between drawing and answering in text (the "Reply as" setting, default `auto`):

- a message ending with "?", opening with a question word or a caption request ("describe ...", "caption
  ..."), or images without text (captioned with the checkpoint's caption instruction) are answered in text:
  `<img>` is suppressed, as in the `seed-image-to-text` pipeline;
- a message with a drawing or editing verb (draw, make, change, edit, move, ...) is answered with an image:
  `force_image=True`, as in the `seed-text-to-image` pipeline;
- anything else is left to the model: constrained decoding lets it open `<img>` (and then write exactly one
  well-formed image) or answer in text. SEED-Shapes draws a bare description ("a large red circle ...").

Answers stream token by token (`model.generate` in a thread with a streamer); a drawing appears in the chat as
soon as its codes are written, sharpening through the de-tokenizer's denoising steps, with a progress line.
The LLM and the de-tokenizer each run under their own lock (the model's global random state is seeded per turn;
the de-tokenizer's scheduler is shared state), so one session's drawing can denoise while another's answer is
written.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers.generation.streamers import BaseStreamer

REPLY_MODES = ("auto", "text", "image")
QUESTION_OPENING = re.compile(
    r"^\s*(what|which|who|where|when|why|how|is|are|does|do|can|could|describe|caption|tell|explain)\b", re.I
)
DRAWING_VERB = re.compile(
    r"\b(draw|paint|sketch|make|change|edit|move|turn|recolou?r|colou?r|put|place|shift|render|create|generate)\b",
    re.I,
)
MAX_MESSAGE_CHARACTERS = 1000
# images listed in a session's "See the tokens" panel (the conversation itself is bounded by the context)
MAX_SESSION_IMAGES = 24
# uploads are kept this large (longest side) for the "See the tokens" panel
THUMBNAIL_SIZE = 256
# a denoising preview every this many steps
PREVIEW_EVERY = 5


def reply_mode(text: str, has_images: bool, reply_as: str = "auto") -> str:
    """
    How a turn is answered: `"text"` (`<img>` suppressed), `"image"` (`force_image`) or `"auto"` (the model
    decides under constrained decoding). `reply_as` other than `"auto"` is returned as is; see the module
    docstring for the rule.
    """
    if reply_as not in REPLY_MODES:
        raise ValueError(f"`reply_as` must be one of {REPLY_MODES}, got {reply_as!r}")
    if reply_as != "auto":
        return reply_as
    text = text.strip()
    if (not text and has_images) or text.endswith("?") or QUESTION_OPENING.match(text):
        return "text"
    if DRAWING_VERB.search(text):
        return "image"
    return "auto"


@dataclasses.dataclass(frozen=True)
class TurnSettings:
    """Sampling and drawing settings of one turn (defaults: `SeedChat.default_settings()`, the checkpoint's)."""

    seed: int
    temperature: float
    top_p: float
    image_guidance_scale: float
    num_inference_steps: int
    decoder_guidance_scale: float
    reply_as: str = "auto"


@dataclasses.dataclass
class SessionImage:
    """An image of a conversation: a label for the UI, its 32 codes and the picture shown in the chat."""

    label: str
    codes: list[int]
    image: Image.Image


@dataclasses.dataclass
class ChatSession:
    """One browser session's conversation, kept in a `gr.State`: the chat messages the model sees (images as
    codes) and the images listed in "See the tokens"."""

    messages: list[dict] = dataclasses.field(default_factory=list)
    images: list[SessionImage] = dataclasses.field(default_factory=list)
    images_seen: int = 0

    def add_image(self, kind: str, codes: list[int], image: Image.Image) -> None:
        self.images_seen += 1
        self.images.append(SessionImage(f"image {self.images_seen} ({kind})", codes, image))
        del self.images[:-MAX_SESSION_IMAGES]


@dataclasses.dataclass
class TurnUpdate:
    """The answer of a turn so far: `segments` are text (`str`) and images (PIL; a denoising preview until
    the image is done) in the order written; `status` is a progress line, `None` once the turn is complete."""

    segments: list[str | Image.Image]
    status: str | None = None
    dropped_turns: int = 0


class _TokenQueueStreamer(BaseStreamer):
    """Hands the ids `generate` writes to a queue as they come (the prompt, put first, is skipped)."""

    def __init__(self, events: queue.Queue):
        self.events = events
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.events.put(("tokens", value.reshape(-1).tolist()))

    def end(self) -> None:
        pass


class SeedChat:
    """
    The model side of the demo, shared by every session: a SEED-LLaMA model, its processor and the de-tokenizer,
    loaded once from `model` (a checkpoint folder or Hub repo id, see `seed_hf.main_job.resolve_model`).
    """

    def __init__(self, model: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForCausalLM, AutoProcessor

        import seed_hf  # noqa: F401  (registers the SEED classes)
        from seed_hf.main_job import resolve_model
        from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline
        from seed_hf.pipelines.text_to_image import DEFAULT_QUESTION

        self.model_dir = resolve_model(model)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).eval()
        self.processor = AutoProcessor.from_pretrained(self.model_dir)
        self.visual_tokenizer = self.model.visual_tokenizer  # loaded now, not by the first request
        self.detokenizer = SeedUnCLIPPipeline.from_pretrained(
            self.model.resolve_component(self.model.config.detokenizer_name_or_path),
            seed_tokenizer=self.visual_tokenizer,
            dtype=dtype,
        )
        self.detokenizer.set_progress_bar_config(disable=True)
        self.caption_instruction = DEFAULT_QUESTION
        self.layout = self.model.image_token_layout
        self.context_length = self.model.config.max_position_embeddings
        # generate seeds the global random state; the de-tokenizer's scheduler keeps per-call state
        self._model_lock = threading.Lock()
        self._detokenizer_lock = threading.Lock()

    @property
    def image_tokens(self) -> int:
        """Tokens of one image in the context: `<img>`, the codes, `</img>`."""
        return self.layout.tokens_per_image + 2

    def default_settings(self) -> TurnSettings:
        """The checkpoint's recommended settings: its `generation_config.json` and the de-tokenizer's defaults."""
        generation_config = self.model.generation_config
        return TurnSettings(
            seed=0,
            temperature=generation_config.temperature or 1.0,
            top_p=generation_config.top_p or 1.0,
            image_guidance_scale=1.0,
            num_inference_steps=self.detokenizer.config.default_num_inference_steps,
            decoder_guidance_scale=self.detokenizer.config.default_guidance_scale,
        )

    def example_image(self) -> Path | None:
        """The checkpoint's example image (`example.png`), if it ships one."""
        path = self.model_dir / "example.png"
        return path if path.is_file() else None

    def encode_images(self, images: list[Image.Image]) -> list[list[int]]:
        """The 32 SEED codes of each image."""
        if not images:
            return []
        pixel_values = self.processor.image_processor(
            images=[image.convert("RGB") for image in images], return_tensors="pt"
        ).pixel_values
        with self._model_lock, torch.inference_mode():
            return self.model.get_image_codes(pixel_values).tolist()

    def draw(self, codes: list[int], settings: TurnSettings, on_preview=None) -> Image.Image:
        """De-tokenize one image's codes; `on_preview(step, total, image)` is called every `PREVIEW_EVERY`
        denoising steps with the partly denoised picture."""
        total = settings.num_inference_steps

        def preview(pipeline, step: int, timestep, tensors: dict) -> dict:
            done = step + 1
            if on_preview is not None and done % PREVIEW_EVERY == 0 and done < total:
                latents = tensors["latents"] / pipeline.vae.config.scaling_factor
                picture = pipeline.vae.decode(latents, return_dict=False)[0]
                on_preview(done, total, pipeline.image_processor.postprocess(picture, output_type="pil")[0])
            return {}

        with self._detokenizer_lock:
            return self.detokenizer(
                image_codes=torch.tensor([codes]),
                num_inference_steps=total,
                guidance_scale=settings.decoder_guidance_scale,
                generator=torch.Generator().manual_seed(settings.seed),
                callback_on_step_end=preview,
            ).images[0]

    def _fitted_prompt(self, messages: list[dict], answer_room: int) -> tuple[dict, int]:
        """Tokenized `messages`, leaving out the oldest turns (a user message and its answer) until the prompt
        leaves `answer_room` tokens of the context; returns the inputs and the number of turns left out."""
        first = 0
        while True:
            inputs = self.processor.apply_chat_template(
                messages[first:], tokenize=True, return_dict=True, return_tensors="pt"
            )
            length = inputs["input_ids"].shape[1]
            if length + answer_room <= self.context_length:
                return inputs, first // 2
            if first + 2 >= len(messages):
                new_images = sum(item.get("type") == "image" for item in messages[-1]["content"])
                most_images = (self.context_length - answer_room - 16) // self.image_tokens
                raise ValueError(
                    f"this message takes {length} tokens ({new_images} images of {self.image_tokens} tokens "
                    f"each and the text), but the model's context holds {self.context_length} tokens and the "
                    f"answer needs {answer_room}: send at most {most_images} images with a short text"
                )
            first += 2

    def chat(
        self, session: ChatSession, text: str, images: list[Image.Image], settings: TurnSettings
    ) -> Iterator[TurnUpdate]:
        """
        Answer one user turn of `session` (its `text` and uploaded `images`), yielding the answer as it is written
        and drawn. When the answer is complete the turn is recorded in `session` (images as codes). Bad input
        (too long a message, more images than the context holds) raises `ValueError` before anything runs.
        """
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a string, got {type(text).__name__}")
        if len(text) > MAX_MESSAGE_CHARACTERS:
            raise ValueError(
                f"the message has {len(text)} characters; at most {MAX_MESSAGE_CHARACTERS} are accepted"
            )
        if not text.strip() and not images:
            raise ValueError("type a message or upload an image")
        mode = reply_mode(text, bool(images), settings.reply_as)
        if len(images) * self.image_tokens >= self.context_length:
            raise ValueError(
                f"{len(images)} images take {len(images) * self.image_tokens} tokens, more than the model's "
                f"context of {self.context_length} tokens"
            )
        upload_codes = self.encode_images(images)
        content = [{"type": "image", "codes": codes} for codes in upload_codes]
        content.append({"type": "text", "text": text if text.strip() else self.caption_instruction})
        messages = [*session.messages, {"role": "user", "content": content}]
        answer_room = 8 if mode == "text" else self.image_tokens + 1
        with self._model_lock:  # the tokenizer is not safe to call from several threads at once
            inputs, dropped_turns = self._fitted_prompt(messages, answer_room)
        generate_kwargs: dict[str, Any] = {
            "do_sample": True,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "image_guidance_scale": settings.image_guidance_scale,
        }
        if mode == "text":
            generate_kwargs["suppress_tokens"] = [self.layout.boi_token_id]
        elif mode == "image":
            generate_kwargs["force_image"] = True

        events: queue.Queue = queue.Queue()
        worker = threading.Thread(
            target=self._write_and_draw, args=(inputs, generate_kwargs, settings, events), daemon=True
        )
        worker.start()
        new_ids: list[int] = []
        drawn: dict[int, Image.Image] = {}  # image number -> finished picture or latest preview
        status = None
        while True:
            kind, payload = events.get()
            if kind == "error":
                raise payload
            if kind == "done":
                break
            if kind == "tokens":
                new_ids.extend(payload)
                status = None
            elif kind == "preview":
                number, step, total, picture = payload
                drawn[number] = picture
                status = f"drawing image {number + 1}: denoising step {step}/{total}"
            elif kind == "image":
                number, picture = payload
                drawn[number] = picture
                status = None
            segments = self.processor.parse_generation(torch.tensor(new_ids, dtype=torch.long))
            shown, writing = _shown_segments(segments, drawn, self.layout.tokens_per_image)
            yield TurnUpdate(shown, status or writing, dropped_turns)
        worker.join()

        segments = self.processor.parse_generation(torch.tensor(new_ids, dtype=torch.long))
        shown, _ = _shown_segments(segments, drawn, self.layout.tokens_per_image)
        for image, codes in zip(images, upload_codes, strict=True):
            thumbnail = image.convert("RGB")
            thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            session.add_image("uploaded", codes, thumbnail)
        answer = []
        number = 0
        for segment in segments:
            if isinstance(segment, str):
                answer.append({"type": "text", "text": segment})
            elif segment.complete:
                codes = segment.codes.tolist()
                answer.append({"type": "image", "codes": codes})
                session.add_image("drawn", codes, drawn[number])
                number += 1
        # what the model no longer sees is left out of the session too, keeping its size bounded
        session.messages = [*messages[2 * dropped_turns :], {"role": "assistant", "content": answer}]
        yield TurnUpdate(shown, None, dropped_turns)

    def _write_and_draw(self, inputs: dict, generate_kwargs: dict, settings: TurnSettings, events) -> None:
        """Worker thread of a turn: write the answer (streamed), then draw each complete image it holds."""
        try:
            with self._model_lock, torch.random.fork_rng(), torch.inference_mode():
                torch.manual_seed(settings.seed)
                sequences = self.model.generate(
                    **inputs, streamer=_TokenQueueStreamer(events), **generate_kwargs
                )
            segments = self.processor.parse_generation(sequences[0, inputs["input_ids"].shape[1] :])
            images = [segment for segment in segments if not isinstance(segment, str) and segment.complete]
            for number, segment in enumerate(images):

                def on_preview(step, total, picture, number=number):
                    events.put(("preview", (number, step, total, picture)))

                events.put(("preview", (number, 0, settings.num_inference_steps, None)))
                picture = self.draw(segment.codes.tolist(), settings, on_preview)
                events.put(("image", (number, picture)))
        except Exception as error:  # handed to the request thread, which reports it
            events.put(("error", error))
        else:
            events.put(("done", None))


def _shown_segments(
    segments: list, drawn: dict[int, Image.Image | None], tokens_per_image: int
) -> tuple[list[str | Image.Image], str | None]:
    """What the chat shows of a partial answer: text, and each complete image's picture or preview when there
    is one; plus a progress line while an image's codes are being written."""
    shown: list[str | Image.Image] = []
    writing = None
    number = 0
    for segment in segments:
        if isinstance(segment, str):
            shown.append(segment)
        elif segment.complete:
            if drawn.get(number) is not None:
                shown.append(drawn[number])
            number += 1
        elif segment.opened and not segment.closed:
            writing = f"writing image codes {segment.num_codes}/{tokens_per_image}"
    return shown, writing


__all__ = ["ChatSession", "SeedChat", "SessionImage", "TurnSettings", "TurnUpdate", "reply_mode"]
