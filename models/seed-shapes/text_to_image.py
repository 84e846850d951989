"""transformers pipeline tasks of SEED-LLaMA, registered on `import seed_hf`:

- `seed-text-to-image`: prompt -> SEED-LLaMA writes `<img>` + 32 codes + `</img>` (constrained decoding) -> the
  unCLIP de-tokenizer draws the codes; returns the images and any text the model wrote.
- `seed-image-to-text`: image (+ question) -> SEED-LLaMA reads the image's codes -> text (captioning, VQA).

A full checkpoint folder (see `seed_hf.checkpoint.save_seed_checkpoint`) holds the LLM and its processor at the top, the SEED
tokenizer in `visual_tokenizer/` and the de-tokenizer in `detokenizer/`, both named in the LLM's config. This
module never imports diffusers at import time (it is imported when `seed_hf` registers the tasks); the
de-tokenizer is loaded on first use.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from transformers import GenerationConfig, Pipeline
from transformers.image_utils import load_image

DEFAULT_QUESTION = "Please provide an accurate and concise description of the given image."

# Inference defaults of the SEED-LLaMA release: sampling with top_p 0.5, temperature 1.0, up to 512 new tokens.
RELEASE_GENERATION_CONFIG = GenerationConfig(do_sample=True, top_p=0.5, temperature=1.0, max_new_tokens=512)


class _SeedLlamaPipeline(Pipeline):
    """Shared loading, validation and seeded generation of the SEED-LLaMA pipelines."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = RELEASE_GENERATION_CONFIG

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model.config, "model_type", None) != "seed_llama":
            raise ValueError(
                f"{type(self).__name__} needs a SEED-LLaMA model (model_type 'seed_llama'), got "
                f"{type(self.model).__name__} ({getattr(self.model.config, 'model_type', None)!r})"
            )
        if self.processor is None:
            raise ValueError(
                f"{type(self).__name__} needs the SeedLlamaProcessor saved with the model (processor=)"
            )
        # decoder-only generation over a padded batch: pad on the left so that every prompt ends at the same place
        self.tokenizer.padding_side = "left"

    def _sanitize_generation(self, generate_kwargs: dict | None, max_new_tokens, extra: dict) -> dict:
        generate_kwargs = dict(generate_kwargs or {})
        generate_kwargs.update(extra)
        if max_new_tokens is not None:
            generate_kwargs["max_new_tokens"] = max_new_tokens
        if generate_kwargs.get("num_return_sequences", 1) != 1:
            # one answer per input keeps outputs aligned with inputs; repeat an input to get more
            raise ValueError(
                f"`num_return_sequences` must be 1 (repeat the input for more answers), "
                f"got {generate_kwargs['num_return_sequences']}"
            )
        return generate_kwargs

    def _chat_inputs(self, messages: list[dict], chat_template: str | None) -> dict:
        return self.processor.apply_chat_template(
            messages, chat_template=chat_template, tokenize=True, return_dict=True, return_tensors="pt"
        )

    def _generate(
        self, model_inputs: dict, generate_kwargs: dict, seed: int | None, **overrides
    ) -> torch.Tensor:
        """The new ids `[B, new]` of `model.generate`; with a `seed`, sampling is reproducible and leaves the global
        random state as it was."""
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs, **overrides)
        prompt_length = model_inputs["input_ids"].shape[1]
        with _seeded(seed, self.device):
            sequences = self.model.generate(**model_inputs, **generate_kwargs)
        return sequences[:, prompt_length:]


class SeedTextToImagePipeline(_SeedLlamaPipeline):
    r"""
    Text-to-image with SEED-LLaMA: the model answers the prompt starting with an image (`<img>`, exactly
    `tokens_per_image` codes, `</img>`, enforced by constrained decoding) and the unCLIP de-tokenizer draws every
    complete image it wrote. Text the model writes after (or between) images is returned too.

    ```python
    >>> import seed_hf
    >>> from transformers import pipeline

    >>> generator = pipeline("seed-text-to-image", model="path/to/seed-checkpoint")
    >>> out = generator("A red apple on a wooden table", seed=0)
    >>> out["images"][0].save("apple.png")
    ```

    Inputs: a prompt (`str`), a conversation (a list of chat messages, e.g. an image and an edit instruction:
    `[{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "make it blue"}]}]`;
    earlier drawn images may be given by their codes, `{"type": "image", "codes": out["image_codes"][0]}`), or a
    list of prompts or conversations (generated `batch_size` at a time, left-padded).

    Call parameters:
        seed (`int`, *optional*): makes the whole call reproducible (LLM sampling and diffusion noise) without
            touching the global random state.
        max_new_tokens (`int`, *optional*): LLM budget (release default 512); must leave room for an image.
        generate_kwargs (`dict`, *optional*) and other generation parameters (`do_sample`, `top_p`,
            `temperature`, `image_guidance_scale`, ...): passed to `model.generate`. Release defaults: sampling
            with top_p 0.5, temperature 1.0.
        num_inference_steps (`int`, *optional*, defaults to 20), decoder_guidance_scale (`float`, *optional*,
            defaults to 10), height / width (`int`, *optional*): de-tokenizer settings.
        chat_template (`str`, *optional*): `"vicuna"` (default) or `"llama2"`.

    Returns, per prompt, a dict: `images` (the PIL images drawn, in order), `image_codes` (their codes, one
    `LongTensor` each, to continue a conversation), `generated_text` (the text written, images removed) and
    `segments` (text and PIL images in the order the model wrote them).

    Args (construction, besides the usual pipeline ones):
        detokenizer ([`SeedUnCLIPPipeline`], *optional*): the de-tokenizer to use; by default loaded from
            `model.config.detokenizer_name_or_path` on first use, with the model's visual tokenizer attached.
    """

    def __init__(self, *args, detokenizer=None, **kwargs):
        self._detokenizer = detokenizer
        super().__init__(*args, **kwargs)

    @property
    def detokenizer(self):
        """The unCLIP de-tokenizer, loaded on first use."""
        if self._detokenizer is None:
            name_or_path = self.model.config.detokenizer_name_or_path
            if name_or_path is None:
                raise ValueError(
                    "seed-text-to-image needs a de-tokenizer: set model.config.detokenizer_name_or_path (see "
                    "save_seed_checkpoint) or pass detokenizer=SeedUnCLIPPipeline(...) to pipeline()"
                )
            try:  # seed-hf installed: its de-tokenizer class
                from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline as loader

                remote_code = {}
            except (
                ImportError
            ):  # this file is a checkpoint's copy, trusted by the caller; so is the de-tokenizer's
                from diffusers import DiffusionPipeline as loader

                remote_code = {"trust_remote_code": True}
            detokenizer = loader.from_pretrained(
                self.model.resolve_component(name_or_path),
                seed_tokenizer=self.model.visual_tokenizer,
                dtype=self.model.dtype,
                **remote_code,
            )
            detokenizer.set_progress_bar_config(disable=True)
            self._detokenizer = detokenizer.to(self.device)
        return self._detokenizer

    def _sanitize_parameters(
        self,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        num_inference_steps: int | None = None,
        decoder_guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        chat_template: str | None = None,
        **other_generate_kwargs,
    ):
        preprocess_params = {"chat_template": chat_template} if chat_template is not None else {}
        detokenizer_kwargs = {
            key: value
            for key, value in (
                ("num_inference_steps", num_inference_steps),
                ("guidance_scale", decoder_guidance_scale),
                ("height", height),
                ("width", width),
            )
            if value is not None
        }
        forward_params = {
            "seed": seed,
            "detokenizer_kwargs": detokenizer_kwargs,
            "generate_kwargs": self._sanitize_generation(
                generate_kwargs, max_new_tokens, other_generate_kwargs
            ),
        }
        return preprocess_params, forward_params, {}

    def __call__(self, prompts: str | list[str] | list[dict] | list[list[dict]], **kwargs):
        """Draw an image for each prompt or conversation; see the class docstring for the parameters and the
        output."""
        if _is_conversation(prompts):
            return super().__call__([_Conversation(prompts)], **kwargs)[0]
        if isinstance(prompts, (list, tuple)):
            bad = [
                type(prompt).__name__
                for prompt in prompts
                if not (isinstance(prompt, str) or _is_conversation(prompt))
            ]
            if bad or not prompts:
                raise ValueError(
                    "`prompts` must be a string, a conversation (list of message dicts) or a non-empty list of "
                    f"them, got items of type {bad}"
                )
            prompts = [prompt if isinstance(prompt, str) else _Conversation(prompt) for prompt in prompts]
        elif not isinstance(prompts, str):
            raise ValueError(
                "`prompts` must be a string, a conversation (list of message dicts) or a list of them, got "
                f"{type(prompts).__name__}"
            )
        return super().__call__(prompts, **kwargs)

    def preprocess(self, prompt, chat_template: str | None = None) -> dict:
        if isinstance(prompt, _Conversation):
            return self._chat_inputs(prompt.messages, chat_template)
        return self._chat_inputs([{"role": "user", "content": prompt}], chat_template)

    def _forward(self, model_inputs: dict, seed=None, detokenizer_kwargs=None, generate_kwargs=None) -> dict:
        new_ids = self._generate(
            model_inputs, generate_kwargs or {}, seed, force_image=True, constrain_images=True
        )
        segments = [self.processor.parse_generation(row) for row in new_ids]
        # draw every complete image of the batch in one de-tokenizer call
        positions = [
            (row, index)
            for row, row_segments in enumerate(segments)
            for index, segment in enumerate(row_segments)
            if not isinstance(segment, str) and segment.complete  # an ImageSegment
        ]
        if positions:
            codes = torch.stack([segments[row][index].codes for row, index in positions])
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            images = self.detokenizer(
                image_codes=codes, generator=generator, **(detokenizer_kwargs or {})
            ).images
            for (row, index), image in zip(positions, images, strict=True):
                segments[row][index] = (image, segments[row][index].codes)
        # one tuple per row: the pipeline's un-batching hands `postprocess` a row's tuple, a plain run a list of one
        return {"segments": [tuple(row_segments) for row_segments in segments]}

    def postprocess(self, model_outputs: dict) -> dict[str, Any]:
        segments = model_outputs["segments"]
        segments = list(segments[0] if isinstance(segments, list) else segments)
        drawn = [segment for segment in segments if isinstance(segment, tuple)]
        return {
            "images": [image for image, _ in drawn],
            "image_codes": [codes for _, codes in drawn],
            "generated_text": "".join(segment for segment in segments if isinstance(segment, str)),
            "segments": [segment[0] if isinstance(segment, tuple) else segment for segment in segments],
        }


class SeedImageToTextPipeline(_SeedLlamaPipeline):
    r"""
    Image understanding with SEED-LLaMA: captioning (no question) or visual question answering. The image is
    turned into its 32 SEED codes inside the model; the answer is text only (the model may not open an image).

    ```python
    >>> import seed_hf
    >>> from transformers import pipeline

    >>> reader = pipeline("seed-image-to-text", model="path/to/seed-checkpoint")
    >>> reader("cat.png")  # captioning
    [{'generated_text': '...'}]
    >>> reader("cat.png", question="What colour is the cat?")
    ```

    Inputs: an image (PIL image, path or URL), a list of them, or dicts `{"image": ..., "question": ...}`.

    Call parameters: `question` (`str`, *optional*, default: a captioning instruction), `seed`,
    `max_new_tokens`, `generate_kwargs` and other generation parameters, `chat_template` (as in
    [`SeedTextToImagePipeline`]).
    """

    def _sanitize_parameters(
        self,
        question: str | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        chat_template: str | None = None,
        timeout: float | None = None,
        **other_generate_kwargs,
    ):
        preprocess_params = {
            key: value
            for key, value in (("question", question), ("chat_template", chat_template), ("timeout", timeout))
            if value is not None
        }
        forward_params = {
            "seed": seed,
            "generate_kwargs": self._sanitize_generation(
                generate_kwargs, max_new_tokens, other_generate_kwargs
            ),
        }
        return preprocess_params, forward_params, {}

    def preprocess(
        self, image, question: str | None = None, chat_template: str | None = None, timeout=None
    ) -> dict:
        if isinstance(image, dict):
            if "image" not in image:
                raise ValueError(f"an input dict needs an 'image' key, got keys {sorted(image)}")
            question = image.get("question", question)
            image = image["image"]
        question = DEFAULT_QUESTION if question is None else question
        if not isinstance(question, str):
            raise ValueError(f"`question` must be a string, got {type(question).__name__}")
        content = [
            {"type": "image", "image": load_image(image, timeout=timeout)},
            {"type": "text", "text": question},
        ]
        return self._chat_inputs([{"role": "user", "content": content}], chat_template)

    def _forward(self, model_inputs: dict, seed=None, generate_kwargs=None) -> dict:
        # understanding answers in text: `<img>` is suppressed, and the constraints keep codes out of text
        boi = self.model.config.boi_token_id
        new_ids = self._generate(model_inputs, generate_kwargs or {}, seed, suppress_tokens=[boi])
        return {"new_ids": new_ids}

    def postprocess(self, model_outputs: dict) -> list[dict[str, str]]:
        return [
            {"generated_text": "".join(s for s in self.processor.parse_generation(row) if isinstance(s, str))}
            for row in model_outputs["new_ids"]
        ]


def _is_conversation(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, dict) for item in value)


class _Conversation:
    """One chat given to a pipeline: kept whole (a bare list would be taken for a batch)."""

    def __init__(self, messages: list[dict]):
        self.messages = messages


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


__all__ = [
    "RELEASE_GENERATION_CONFIG",
    "SeedImageToTextPipeline",
    "SeedTextToImagePipeline",
]
