"""transformers pipeline tasks of SEED-LLaMA, registered on `import seed_hf`:

- `seed-text-to-image`: prompt -> SEED-LLaMA writes `<img>` + 32 codes + `</img>` (constrained decoding) -> the
  unCLIP de-tokenizer draws the codes; returns the images and any text the model wrote.
- `seed-image-to-text`: image (+ question) -> SEED-LLaMA reads the image's codes -> text (captioning, VQA).

A full checkpoint folder (see `seed_hf.checkpoint.save_seed_checkpoint`) holds the LLM and its processor at the top, the SEED
tokenizer in `visual_tokenizer/` and the de-tokenizer in `detokenizer/`, both named in the LLM's config. This
module never imports diffusers at import time (it is imported when `seed_hf` registers the tasks); the
de-tokenizer is loaded on first use.

The built-in `image-text-to-text` and `any-to-any` tasks load a SEED checkpoint too (answers in text).
`text-generation` prints an image the model writes as its token text `<img><img_00012>...</img>`: that is lossless
(`processor.parse_generation` reads the codes back), and `seed-text-to-image` is the task that draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .seed_llama_pipeline import (
    RELEASE_GENERATION_CONFIG,
    _as_rows,
    _Conversation,
    _is_conversation,
    _Item,
    _prompt_randomness,
    _SeedLlamaPipeline,
)
from .seed_unclip_inputs import OUTPUT_TYPES  # the de-tokenizer's (a file without diffusers)

try:  # a checkpoint's copy of this file (remote code): the modeling files sit beside it
    from .image_processing_seed import DEFAULT_IMAGE_TIMEOUT, open_image
except ImportError:  # the seed-hf package
    from seed_hf.modeling.image_processing_seed import DEFAULT_IMAGE_TIMEOUT, open_image

DEFAULT_QUESTION = "Please provide an accurate and concise description of the given image."


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

    Inputs: a prompt (`str`, also as `prompt=`), a conversation (a list of chat messages, e.g. an image and an
    edit instruction: `[{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text":
    "make it blue"}]}]`; earlier drawn images may be given by their codes, `{"type": "image", "codes":
    out["image_codes"][0]}`), a list of prompts or conversations (generated `batch_size` at a time, left-padded;
    returns a list), or a generator, iterable or dataset of them (e.g. `KeyDataset(dataset, "prompt")`; returns an
    iterator).

    Call parameters:
        seed (`int`, *optional*): makes the call reproducible without using the global random state, also when
            threads call one pipeline at once. Prompt `i` of the call (0-based) gets its own seed `seed + i`, for
            its LLM sampling and its diffusion noise (each from `torch.Generator().manual_seed(seed + i)`; the LLM
            samples by [`SeedGeneratorSamplingLogitsProcessor`], from the distribution `generate` samples from),
            so a prompt's images do not depend on `batch_size` or on the other prompts. Beam sampling
            (`num_beams` > 1 with `do_sample`) cannot be seeded.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): instead of `seed`, the randomness of
            every prompt (a list: one generator per prompt). A prompt's LLM sampling is seeded with a number drawn
            from its generator; its diffusion noise comes from the generator itself.
        max_new_tokens (`int`, *optional*): LLM budget (release default 512); must leave room for an image.
        generate_kwargs (`dict`, *optional*) and other generation parameters (`do_sample`, `top_p`,
            `temperature`, `image_guidance_scale`, ...): passed to `model.generate`. Release defaults: sampling
            with top_p 0.5, temperature 1.0.
        negative_prompt (`str`, *optional*): text the drawing moves away from: the unconditional prompt of the
            LLM's classifier-free guidance on image codes (rendered with the chat template, passed as
            `image_negative_prompt_ids`), so it needs `image_guidance_scale` > 1. The de-tokenizer's own guidance
            is unchanged (its unconditional branch stays the zero embedding of the release).
        num_images_per_prompt (`int`, *optional*, defaults to 1): drawings of each image the model writes (the
            same codes, different diffusion noise).
        output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` (`[H, W, 3]` arrays), `"pt"`
            (`[3, H, W]` tensors) or `"latent"` (the de-tokenizer's latents).
        num_inference_steps (`int`, *optional*), guidance_scale (`float`, *optional*; `decoder_guidance_scale`
            is the same), height / width (`int`, *optional*): de-tokenizer settings (its defaults: the
            checkpoint's recommended settings, the release's 20 steps and guidance 10).
        chat_template (`str`, *optional*): the name of one of the processor's templates (`"vicuna"`, the
            default, or `"llama2"`) or a Jinja template.
        force_image (`bool`, *optional*, defaults to `True`): start the answer with `<img>`. `False` lets the
            model write text first, for a model trained to describe what it draws before drawing it (SEED-Shapes
            does for compositions and in-context edits); images stay well-formed either way.

    Returns, per prompt, a dict: `images` (the images drawn, in order; `num_images_per_prompt` per written image),
    `image_codes` (the codes of each of those images, one `LongTensor` each, to continue a conversation),
    `generated_text` (the text written, images removed) and `segments` (text and images in the order the model
    wrote them).

    Args (construction, besides the usual pipeline ones):
        detokenizer ([`SeedUnCLIPPipeline`], *optional*): the de-tokenizer to use; by default loaded from
            `model.config.detokenizer_name_or_path` on first use, with the model's visual tokenizer attached.
    """

    _input_kinds = "`prompts` must be a string, a conversation (list of message dicts)"

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
        generator: torch.Generator | list[torch.Generator] | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        negative_prompt: str | None = None,
        num_images_per_prompt: int | None = None,
        output_type: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        decoder_guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        chat_template: str | None = None,
        force_image: bool | None = None,
        **other_generate_kwargs,
    ):
        preprocess_params, forward_params = self._sanitize_common(
            seed, generator, chat_template, generate_kwargs, max_new_tokens, other_generate_kwargs
        )
        # also accepted among the generation parameters, where `model.generate` takes it
        in_generate_kwargs = forward_params["generate_kwargs"].pop("force_image", None)
        if force_image is not None and in_generate_kwargs is not None:
            raise ValueError("pass `force_image` once, as a call parameter or in `generate_kwargs`, not both")
        if force_image is None:
            force_image = True if in_generate_kwargs is None else in_generate_kwargs
        if not isinstance(force_image, bool):
            raise ValueError(f"`force_image` must be a bool, got {type(force_image).__name__}")
        forward_params["force_image"] = force_image
        if guidance_scale is not None and decoder_guidance_scale is not None:
            raise ValueError("pass `guidance_scale` or `decoder_guidance_scale` (the same setting), not both")
        if num_images_per_prompt is not None and (
            isinstance(num_images_per_prompt, bool)
            or not isinstance(num_images_per_prompt, int)
            or num_images_per_prompt < 1
        ):
            raise ValueError(
                f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}"
            )
        if output_type is not None and output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        if negative_prompt is not None:
            forward_params["generate_kwargs"].update(
                self._negative_prompt_inputs(
                    negative_prompt, forward_params["generate_kwargs"], preprocess_params.get("chat_template")
                )
            )
        forward_params["num_images_per_prompt"] = num_images_per_prompt or 1
        forward_params["detokenizer_kwargs"] = {
            key: value
            for key, value in (
                ("num_inference_steps", num_inference_steps),
                ("guidance_scale", decoder_guidance_scale if guidance_scale is None else guidance_scale),
                ("height", height),
                ("width", width),
                ("output_type", output_type),
            )
            if value is not None
        }
        return preprocess_params, forward_params, {}

    def _negative_prompt_inputs(
        self, negative_prompt, generate_kwargs: dict, chat_template: str | None
    ) -> dict:
        """`negative_prompt` as the unconditional prompt of the LLM's image guidance."""
        if not isinstance(negative_prompt, str):
            raise ValueError(f"`negative_prompt` must be a string, got {type(negative_prompt).__name__}")
        if generate_kwargs.get("image_negative_prompt_ids") is not None:
            raise ValueError("pass `negative_prompt` or `image_negative_prompt_ids`, not both")
        if generate_kwargs.get("image_guidance_scale") in (None, 1):
            raise ValueError(
                "`negative_prompt` is the unconditional prompt of the classifier-free guidance on image codes: "
                "pass `image_guidance_scale` (> 1) too"
            )
        negative = self._chat_inputs([{"role": "user", "content": negative_prompt}], chat_template)
        return {
            "image_negative_prompt_ids": negative["input_ids"],
            "image_negative_prompt_attention_mask": negative["attention_mask"],
        }

    def __call__(self, prompts=None, *, prompt=None, **kwargs):
        """Draw an image for each prompt or conversation (`prompt=` is the diffusers name of `prompts`); see the
        class docstring for the parameters and the output."""
        if prompt is not None:
            if prompts is not None:
                raise ValueError("pass the prompts positionally or as `prompt=`, not both")
            prompts = prompt
        return super().__call__(prompts, **kwargs)

    def _single_input(self, value):
        if isinstance(value, str):
            return value
        if _is_conversation(value):
            return _Conversation(value)
        return None

    def preprocess(self, item: _Item, chat_template: str | None = None) -> dict:
        prompt = item.value
        messages = (
            prompt.messages if isinstance(prompt, _Conversation) else [{"role": "user", "content": prompt}]
        )
        return {**self._chat_inputs(messages, chat_template), "item": item}

    def _forward(
        self,
        model_inputs: dict,
        seed=None,
        generator=None,
        num_images_per_prompt: int = 1,
        detokenizer_kwargs=None,
        generate_kwargs=None,
        force_image: bool = True,
    ) -> dict:
        items = _as_rows(model_inputs.pop("item"))
        randomness = [_prompt_randomness(seed, generator, item.index) for item in items]
        new_ids = self._generate(
            model_inputs,
            [llm_seed for llm_seed, _ in randomness],
            generate_kwargs or {},
            force_image=force_image,
            constrain_images=True,
        )
        segments = [self.processor.parse_generation(row) for row in new_ids]
        # draw every complete image of the batch in one de-tokenizer call, each with its prompt's noise generator
        positions = [
            (row, index)
            for row, row_segments in enumerate(segments)
            for index, segment in enumerate(row_segments)
            if not isinstance(segment, str) and segment.complete  # an ImageSegment
        ]
        if positions:
            codes = torch.stack([segments[row][index].codes for row, index in positions])
            noise = [randomness[row][1] for row, _ in positions for _ in range(num_images_per_prompt)]
            images = self.detokenizer(
                image_codes=codes,
                generator=None if noise[0] is None else noise,
                num_images_per_prompt=num_images_per_prompt,
                **(detokenizer_kwargs or {}),
            ).images
            for number, (row, index) in enumerate(positions):
                first = number * num_images_per_prompt
                segments[row][index] = _DrawnImage(
                    [images[first + k] for k in range(num_images_per_prompt)], segments[row][index].codes
                )
        # one tuple per row: the pipeline's un-batching hands `postprocess` a row's tuple, a plain run a list of one
        return {"segments": [tuple(row_segments) for row_segments in segments]}

    def postprocess(self, model_outputs: dict) -> dict[str, Any]:
        segments = model_outputs["segments"]
        segments = list(segments[0] if isinstance(segments, list) else segments)
        drawn = [segment for segment in segments if isinstance(segment, _DrawnImage)]
        return {
            "images": [image for image_segment in drawn for image in image_segment.images],
            "image_codes": [image_segment.codes for image_segment in drawn for _ in image_segment.images],
            "generated_text": "".join(segment for segment in segments if isinstance(segment, str)),
            "segments": [
                part
                for segment in segments
                for part in (segment.images if isinstance(segment, _DrawnImage) else [segment])
            ],
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
    >>> reader("cat.png", question="What colour is the cat?")  # or text=..., as in image-text-to-text
    >>> reader([{"role": "user", "content": [{"type": "image", "image": "cat.png"}, {"type": "text", "text": "Hi"}]}])
    ```

    Inputs (positionally or as `images=`): an image (PIL image, path or URL), a dict `{"image": ..., "question":
    ...}`, a conversation (a list of chat messages with image items, as in the `image-text-to-text` task, or video
    items `{"type": "video", "video": frames | path}` read as their sampled frames; also as `text=`), a list of them
    (returns a list), or a generator, iterable or dataset of them (returns an iterator).

    Call parameters: `question` (`str`, *optional*, default: a captioning instruction; `text` is the same, the
    name `image-text-to-text` uses), `return_full_text` (`bool`, *optional*, defaults to `False`: the answer only;
    `True`: the question followed by the answer, or for a conversation the messages with the answer appended as
    an assistant message), `seed` / `generator` (per input, as in [`SeedTextToImagePipeline`]),
    `max_new_tokens`, `generate_kwargs` and other generation parameters (not `force_image`: the answer is text),
    `chat_template`, `timeout` (`float`, *optional*, defaults to 10: seconds to wait for the server of an image
    URL, also one in a conversation, to connect and for each read; a `TimeoutError` past it).

    An image given by path, URL or base64 string is opened with PIL in its own mode (`open_image`, as the image
    processor opens them) and handed to the image processor: transparency is composited on white and 16-bit levels
    are scaled, never clipped, whichever way the image is given.
    """

    _input_kinds = (
        "inputs must be an image (PIL image, array, path or URL), a dict with an 'image', a conversation (list of "
        "message dicts)"
    )

    def __call__(self, inputs=None, *, images=None, **kwargs):
        """Answer for each input; see the class docstring."""
        if images is not None:
            if inputs is not None:
                raise ValueError("pass the images positionally or as `images=`, not both")
            inputs = images
        elif inputs is None and _is_conversation(kwargs.get("text")):
            inputs = kwargs.pop("text")  # image-text-to-text's `text=messages`
        return super().__call__(inputs, **kwargs)

    def _single_input(self, value):
        if _is_conversation(value):
            return _Conversation(value)
        if isinstance(value, (str, dict, Image.Image, np.ndarray, torch.Tensor)):
            return value
        return None

    def _sanitize_parameters(
        self,
        question: str | None = None,
        text: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict | None = None,
        chat_template: str | None = None,
        timeout: float | None = None,
        return_full_text: bool | None = None,
        **other_generate_kwargs,
    ):
        if question is not None and text is not None:
            raise ValueError("pass `question` or `text` (the same thing), not both")
        question = text if question is None else question
        preprocess_params, forward_params = self._sanitize_common(
            seed, generator, chat_template, generate_kwargs, max_new_tokens, other_generate_kwargs
        )
        if forward_params["generate_kwargs"].get("force_image"):
            raise ValueError(
                "`force_image` starts the answer with an image, but seed-image-to-text answers in text; draw "
                "images with seed-text-to-image"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
        ):
            raise ValueError(f"`timeout` must be a positive number of seconds, got {timeout!r}")
        preprocess_params.update(
            (key, value) for key, value in (("question", question), ("timeout", timeout)) if value is not None
        )
        postprocess_params = {} if return_full_text is None else {"return_full_text": return_full_text}
        return preprocess_params, forward_params, postprocess_params

    def preprocess(
        self,
        item: _Item,
        question: str | None = None,
        chat_template: str | None = None,
        timeout: float = DEFAULT_IMAGE_TIMEOUT,
    ) -> dict:
        image = item.value
        if isinstance(image, _Conversation):
            if question is not None:
                raise ValueError("`question`/`text` is for image inputs: a conversation holds its own text")
            messages = _open_chat_images(image.messages, timeout)
            prompt = image.messages
        else:
            if isinstance(image, dict):
                if "image" not in image:
                    raise ValueError(f"an input dict needs an 'image' key, got keys {sorted(image)}")
                question = image.get("question", question)
                image = image["image"]
            question = DEFAULT_QUESTION if question is None else question
            if not isinstance(question, str):
                raise ValueError(f"`question` must be a string, got {type(question).__name__}")
            content = [
                {"type": "image", "image": open_image(image, timeout) if isinstance(image, str) else image},
                {"type": "text", "text": question},
            ]
            messages = [{"role": "user", "content": content}]
            prompt = question
        # the item carries what `return_full_text` prepends: the question, or the conversation
        return {**self._chat_inputs(messages, chat_template), "item": _Item(prompt, item.index)}

    def _forward(self, model_inputs: dict, seed=None, generator=None, generate_kwargs=None) -> dict:
        items = _as_rows(model_inputs.pop("item"))
        llm_seeds = [_prompt_randomness(seed, generator, item.index)[0] for item in items]
        # understanding answers in text: `<img>` is suppressed, and the constraints keep codes out of text
        boi = self.model.config.boi_token_id
        new_ids = self._generate(model_inputs, llm_seeds, generate_kwargs or {}, suppress_tokens=[boi])
        return {"new_ids": new_ids, "items": items}

    def postprocess(self, model_outputs: dict, return_full_text: bool = False) -> list[dict[str, Any]]:
        results = []
        for row, item in zip(model_outputs["new_ids"], _as_rows(model_outputs["items"]), strict=True):
            answer = "".join(s for s in self.processor.parse_generation(row) if isinstance(s, str))
            if return_full_text:
                prompt = item.value
                answer = (
                    prompt + answer
                    if isinstance(prompt, str)
                    else [*prompt, {"role": "assistant", "content": answer}]
                )
            results.append({"generated_text": answer})
        return results


def _open_chat_images(messages: list, timeout: float) -> list:
    """`messages` with every image item given by a string (URL, path or base64) opened with `timeout`; anything
    else is left for the processor to check."""

    def opened(item):
        if isinstance(item, dict) and item.get("type") == "image":
            key = next(
                (key for key in ("image", "url", "path", "base64") if isinstance(item.get(key), str)), None
            )
            if key is not None:
                rest = {name: value for name, value in item.items() if name != key}
                return {**rest, "image": open_image(item[key], timeout)}
        return item

    return [
        {**message, "content": [opened(item) for item in message["content"]]}
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        else message
        for message in messages
    ]


@dataclass
class _DrawnImage:
    """The drawings of one image the model wrote, and its codes."""

    images: list
    codes: torch.LongTensor


__all__ = [
    "RELEASE_GENERATION_CONFIG",
    "SeedImageToTextPipeline",
    "SeedTextToImagePipeline",
]
