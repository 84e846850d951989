"""Processor of SEED-LLaMA: a LLaMA tokenizer holding the image tokens + `SeedImageProcessor`, with the Vicuna and
LLaMA-2-chat templates of the released models."""

from __future__ import annotations

import os
import re
from functools import lru_cache

import numpy as np
import torch
from transformers import ProcessorMixin
from transformers.image_utils import make_flat_list_of_images
from transformers.processing_utils import MultiModalData
from transformers.utils import CHAT_TEMPLATE_DIR, CHAT_TEMPLATE_FILE, LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE

from .generation_seed_llama import ImageSegment, SeedImageTokenLayout, integer_tensor, parse_generation
from .video_processing_seed import DEFAULT_NUM_FRAMES, check_num_frames, make_list_of_videos, sample_video

# Images in a chat message: `{"type": "image", "image": <PIL/array/path>}` (encoded by the model from pixels) or
# `{"type": "image", "codes": <32 codes>}` (written as image tokens directly); the processor turns a video item
# into image items of its frames before the template renders. Turns follow the released
# instruction-tuning format: the image tokens come first in the user turn, "\n" separates turns and `</s>` ends
# the conversation after the last assistant turn.
_IMAGE_MACRO = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item.type == 'image' and item.codes is defined and item.codes is not none -%}"
    "{{ boi_token }}{%- for code in item.codes -%}{{ image_code_token_format | format(code) }}{%- endfor -%}"
    "{{ eoi_token }}"
    "{%- elif item.type == 'image' -%}{{ image_token }}"
    "{%- elif item.type == 'text' -%}{{ item.text }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)


# Inserted after the first character of a control token typed in chat text (`<img>`, `<img_00042>`, `<image>`,
# `</s>`, ...): the tokenizer then reads it as plain text, never as the token. The word joiner is invisible.
_CONTROL_TOKEN_ESCAPE = "\u2060"
# Item types of chat content (a video is read as images of its frames; SEED-LLaMA reads no audio).
_CHAT_ITEM_TYPES = ("text", "image", "video")
# Tokenizers without a real bound on the prompt length have a `model_max_length` of about 1e30.
_UNBOUNDED_MODEL_MAX_LENGTH = 1e9


@lru_cache(maxsize=8)
def _control_token_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    """A regex matching any of `tokens` (longest first). One-character tokens cannot be split by an escape and
    are left out (tokenizers add them for whitespace, which is ordinary text)."""
    splittable = sorted((token for token in tokens if len(token) > 1), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, splittable)) or "(?!)")


def _escape_control_tokens(text: str, pattern: re.Pattern) -> str:
    """`text` with every control token broken by `_CONTROL_TOKEN_ESCAPE`, repeated until none is left (breaking
    one token may leave another that overlapped it)."""
    while pattern.search(text):
        text = pattern.sub(lambda match: match[0][0] + _CONTROL_TOKEN_ESCAPE + match[0][1:], text)
    return text


def _literal(text: str) -> str:
    # a Jinja expression printing `text`: whitespace next to `{%- -%}` tags would be stripped otherwise
    return "{{ " + repr(text) + " }}"


def _turns_template(
    system_prefix: str, system_suffix: str, user_prefix: str, user_suffix: str, system_in_turn: bool
) -> str:
    # The optional first system message goes before the turns (Vicuna) or inside the first user turn (LLaMA-2);
    # "\n" separates the turns; assistant turns are `{% generation %}` blocks for `return_assistant_tokens_mask`.
    system = (
        "{%- if system_text is not none -%}"
        + _literal(system_prefix)
        + "{{ system_text }}"
        + _literal(system_suffix)
        + "{%- endif -%}"
    )
    return (
        _IMAGE_MACRO + "{%- if messages and messages[0].role == 'system' -%}"
        "{%- set system_text = render_content(messages[0].content) -%}{%- set turns = messages[1:] -%}"
        "{%- else -%}{%- set system_text = none -%}{%- set turns = messages -%}{%- endif -%}"
        "{{ bos_token }}"
        + ("{%- if turns|length == 0 -%}" + system + "{%- endif -%}" if system_in_turn else system)
        + "{%- for message in turns -%}"
        "{%- if message.role == 'user' -%}"
        "{%- if not loop.first -%}"
        + _literal("\n")
        + "{%- endif -%}"
        + _literal(user_prefix)
        + ("{%- if loop.first -%}" + system + "{%- endif -%}" if system_in_turn else "")
        + "{{ render_content(message.content) }}"
        + _literal(user_suffix)
        + "{%- elif message.role == 'assistant' -%}"
        "{% generation %}{{ render_content(message.content) }}{%- if loop.last -%}{{ eos_token }}{%- endif -%}"
        "{% endgeneration %}"
        "{%- else -%}{{ raise_exception('roles after the first message must be user or assistant, got ' + message.role) }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


# SEED-LLaMA-8B (Vicuna-7B): "<system>\nUSER: <image tokens><question>\nASSISTANT:<answer>"
VICUNA_CHAT_TEMPLATE = _turns_template("", "\n", "USER: ", "\nASSISTANT:", system_in_turn=False)
# SEED-LLaMA-14B (LLaMA-2-13B-chat): "[INST] <<SYS>>\n<system>\n<</SYS>>\n\n<image tokens><question> [/INST]<answer>"
LLAMA2_CHAT_TEMPLATE = _turns_template(
    "<<SYS>>\n", "\n<</SYS>>\n\n", "[INST] ", " [/INST]", system_in_turn=True
)

CHAT_TEMPLATES = {"vicuna": VICUNA_CHAT_TEMPLATE, "llama2": LLAMA2_CHAT_TEMPLATE}


def default_chat_templates(default: str = "vicuna") -> dict[str, str]:
    """Both templates, with `default` (`"vicuna"` for SEED-LLaMA-8B, `"llama2"` for 14B) also under "default"."""
    if default not in CHAT_TEMPLATES:
        raise ValueError(f"chat template must be one of {sorted(CHAT_TEMPLATES)}, got {default!r}")
    return {"default": CHAT_TEMPLATES[default], **CHAT_TEMPLATES}


def _remove_chat_template_files(folder: str | os.PathLike) -> None:
    """Delete the chat template files a processor or tokenizer folder may hold (all of them, named or not)."""
    for name in (CHAT_TEMPLATE_FILE, LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE):
        if os.path.isfile(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    named_templates_dir = os.path.join(folder, CHAT_TEMPLATE_DIR)
    if os.path.isdir(named_templates_dir):
        for name in os.listdir(named_templates_dir):
            if name.endswith(".jinja"):
                os.remove(os.path.join(named_templates_dir, name))
        if not os.listdir(named_templates_dir):
            os.rmdir(named_templates_dir)


class SeedLlamaProcessor(ProcessorMixin):
    r"""
    Tokenizer + [`SeedImageProcessor`] of SEED-LLaMA.

    Every `<image>` in the text stands for one image of `images`: it becomes `<img>` + `tokens_per_image`
    `<image>` placeholders + `</img>`, and `pixel_values` are returned; the model turns the pixels into codes and
    writes them over the placeholders (`model.generate(**processor(text=..., images=...))`). Images already
    tokenized are written with [`format_image`] (or `{"type": "image", "codes": ...}` in a chat message).

    `text` is a prompt in the model's markup, trusted as written: `<image>` is an image of `images`, and an image
    written as [`format_image`] writes it is that image; an image written otherwise (codes outside
    `<img>...</img>`, more or fewer than `tokens_per_image` codes) is a `ValueError`. Text from users goes in chat
    messages ([`apply_chat_template`]): there control tokens typed in the text stay text.

    Videos are read as SEED-LLaMA reads them: `num_frames` frames sampled uniformly (frame `i * T // n` of a video
    of `T` frames for `i < n = min(num_frames, T)`, transformers' `default_sample_indices_fn`; a shorter video gives
    all its frames), each an image. A video is a list of frames (PIL images, arrays or tensors), a 4-D array or
    tensor ([T, H, W, C] or [T, C, H, W]) or the path or URL of a video file (decoded with PyAV,
    `pip install "seed-hf[video]"`); `videos` is one video or a list of them. Each `video_token` in `text` (a plain
    string, not a token) stands for one video and is written as one `<image>` per sampled frame, so a video gives
    exactly the tokens and `pixel_values` of its frames given as consecutive images; images and video frames join
    `pixel_values` in the order of their marks in `text`. `num_frames=` in the call (or as a per-item `"num_frames"`
    of a chat video) overrides the attribute. In chat messages a video is an item `{"type": "video", "video":
    frames | path | URL}` (or `"url"` / `"path"`), expanded into image items of its frames before the template
    renders. When the tokenizer has a real `model_max_length`, a prompt holding videos that does not fit in it is a
    `ValueError` naming the video and the frames that would fit; this is checked where prompts are tokenized (the
    call, `apply_chat_template(..., tokenize=True)`), not by the model.

    Args:
        image_processor ([`SeedImageProcessor`]): the image processor of the SEED tokenizer.
        tokenizer ([`PreTrainedTokenizerBase`]): a LLaMA tokenizer with the image tokens `<img_00000>` ...,
            `<img>`, `</img>` and the `<image>` placeholder.
        tokens_per_image (`int`, *optional*, defaults to 32): codes per image.
        image_token (`str`, *optional*, defaults to `"<image>"`): the image placeholder.
        boi_token (`str`, *optional*, defaults to `"<img>"`), eoi_token (`str`, *optional*, defaults to `"</img>"`):
            begin and end of an image.
        image_code_token_format (`str`, *optional*, defaults to `"<img_%05d>"`): printf format of a code token.
        video_token (`str`, *optional*, defaults to `"<video>"`): the mark of a video in `text`.
        num_frames (`int`, *optional*, defaults to 4): frames sampled from a video.
        chat_template (`str` or `dict[str, str]`, *optional*): Jinja chat templates; by default the Vicuna
            (`"vicuna"`, also `"default"`) and LLaMA-2-chat (`"llama2"`) templates.
    """

    def __init__(
        self,
        image_processor,
        tokenizer,
        tokens_per_image: int = 32,
        image_token: str = "<image>",
        boi_token: str = "<img>",
        eoi_token: str = "</img>",
        image_code_token_format: str = "<img_%05d>",
        video_token: str = "<video>",
        num_frames: int = DEFAULT_NUM_FRAMES,
        chat_template: str | dict[str, str] | None = None,
    ):
        if chat_template is None:
            chat_template = default_chat_templates()
        if not isinstance(video_token, str) or not video_token or video_token == image_token:
            raise ValueError(
                f"`video_token` must be a non-empty string other than `image_token`, got {video_token!r}"
            )
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.tokens_per_image = tokens_per_image
        self.image_token = image_token
        self.boi_token = boi_token
        self.eoi_token = eoi_token
        self.image_code_token_format = image_code_token_format
        self.video_token = video_token
        self.num_frames = check_num_frames(num_frames, "`num_frames`")
        self.image_token_layout = SeedImageTokenLayout.from_tokenizer(
            tokenizer, tokens_per_image, image_code_token_format, boi_token, eoi_token, image_token
        )
        self.image_token_id = self.image_token_layout.image_placeholder_id
        self.image_token_ids = [
            self.image_token_id,
            self.image_token_layout.boi_token_id,
            self.image_token_layout.eoi_token_id,
        ]

    def __call__(
        self, images=None, text=None, videos=None, audio=None, num_frames: int | None = None, **kwargs
    ):
        """Tokenize `text` and process `images` and `videos` (read as images of `num_frames` sampled frames, by
        default the processor's `num_frames`) as `ProcessorMixin.__call__` does; `ValueError` when `text` writes a
        malformed image or a prompt holding videos does not fit in the tokenizer's `model_max_length` (see the
        class docstring)."""
        if isinstance(text, (list, tuple)) and not text:
            raise ValueError("`text` must be a string or a non-empty list of strings, got an empty list")
        num_frames = self.num_frames if num_frames is None else check_num_frames(num_frames, "`num_frames`")
        videos_by_row = []
        rows = [text] if isinstance(text, str) else text if isinstance(text, (list, tuple)) else []
        if videos is not None or any(isinstance(row, str) and self.video_token in row for row in rows):
            images, text, videos_by_row = self._with_videos_as_images(images, text, videos, num_frames)
        inputs = super().__call__(images=images, text=text, audio=audio, **kwargs)
        if "input_ids" in inputs:
            self._check_image_markup(inputs["input_ids"])
            self._check_prompt_lengths(inputs, videos_by_row)
        return inputs

    def _with_videos_as_images(self, images, text, videos, num_frames: int):
        """`images` with the sampled frames of `videos` put in at their marks' places, `text` with each video mark
        written as one image mark per frame, and the videos of each row of `text` as (name, frames, frame count)."""
        videos = [] if videos is None else make_list_of_videos(videos)
        images = [] if images is None else make_flat_list_of_images(self.image_processor.fetch_images(images))
        if text is None:  # pixel values only: the images, then the frames of each video
            frames = [
                self._video_frames(video, num_frames, f"video {i} of `videos`")[0]
                for i, video in enumerate(videos)
            ]
            return [*images, *(frame for video_frames in frames for frame in video_frames)], None, []
        rows = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(row, str) for row in rows):
            raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__}")
        for token, argument, items in (
            (self.video_token, "videos", videos),
            (self.image_token, "images", images),
        ):
            marks = sum(row.count(token) for row in rows)
            if marks != len(items):
                raise ValueError(
                    f"`text` marks {marks} {argument} with {token}, but {len(items)} were passed in `{argument}`"
                )
        mark = re.compile(f"{re.escape(self.video_token)}|{re.escape(self.image_token)}")
        images_in_order, videos_in_order = iter(images), enumerate(videos)
        merged, videos_by_row = [], []

        def expand(match: re.Match) -> str:
            if match[0] == self.image_token:
                merged.append(next(images_in_order))
                return match[0]
            position, video = next(videos_in_order)
            name = f"video {position} of `videos`"
            frames, total_num_frames = self._video_frames(video, num_frames, name)
            merged.extend(frames)
            videos_by_row[-1].append((name, len(frames), total_num_frames))
            return self.image_token * len(frames)

        expanded = []
        for row in rows:
            videos_by_row.append([])
            expanded.append(mark.sub(expand, row))
        return merged or None, expanded, videos_by_row

    def _video_frames(self, video, num_frames: int, name: str) -> tuple[list[np.ndarray], int]:
        """The sampled frames of `video` as uint8 [H, W, 3] RGB arrays (so that their channel axis is never
        ambiguous), and its frame count; errors name the video."""
        frames, total_num_frames = sample_video(video, num_frames, name)
        try:
            rgb = [self.image_processor.process_image(frame, do_convert_rgb=True) for frame in frames]
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}: {error}") from error
        return [np.moveaxis(frame, 0, -1) for frame in rgb], total_num_frames

    def _check_prompt_lengths(self, inputs, videos_by_row: list[list[tuple[str, int, int]]]) -> None:
        """`ValueError` when a prompt holding videos is longer than the tokenizer's `model_max_length`."""
        max_length = self.tokenizer.model_max_length
        if not any(videos_by_row) or max_length is None or max_length >= _UNBOUNDED_MODEL_MAX_LENGTH:
            return
        rows = inputs["attention_mask"] if "attention_mask" in inputs else inputs["input_ids"]
        tokens_per_frame = self.tokens_per_image + 2  # <img> + placeholders + </img>
        for row, videos in zip(rows, videos_by_row, strict=True):
            length = int(torch.as_tensor(row).sum()) if "attention_mask" in inputs else len(row)
            excess = length - max_length
            if excess <= 0 or not videos:
                continue
            frames_too_many = -(-excess // tokens_per_frame)
            needs = "; ".join(
                f"{name} is {num_frames} frames (of {total_num_frames}), {num_frames * tokens_per_frame} tokens, "
                f"and {max(0, num_frames - frames_too_many)} of its frames would fit"
                for name, num_frames, total_num_frames in videos
            )
            raise ValueError(
                f"a prompt is {length} tokens long, more than the tokenizer's model_max_length {max_length}: {needs}; "
                "pass a smaller `num_frames`"
            )

    def _check_image_markup(self, input_ids) -> None:
        rows = [input_ids] if len(input_ids) and isinstance(input_ids[0], int) else input_ids
        for row in rows:
            for segment in parse_generation(torch.as_tensor(row), self.image_token_layout):
                if isinstance(segment, ImageSegment) and not segment.complete:
                    raise ValueError(
                        f"`text` writes a malformed image ({segment.num_codes} codes, "
                        f"{'with' if segment.opened else 'without'} {self.boi_token}, "
                        f"{'with' if segment.closed else 'without'} {self.eoi_token}): an image in text is "
                        f"{self.image_token} or `format_image(codes)`, {self.tokens_per_image} codes between "
                        f"{self.boi_token} and {self.eoi_token}; put user text in chat messages, where control "
                        "tokens stay text"
                    )

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as `ProcessorMixin.save_pretrained` does; the folder then holds exactly `self.chat_template`."""
        # The processor and the tokenizer share the template files of a folder, and the tokenizer still holds (and
        # saves) the templates it was loaded with: the files of an earlier save are deleted and the tokenizer
        # writes this processor's templates, so that a template replaced since loading does not come back.
        _remove_chat_template_files(save_directory)
        tokenizer_chat_template = self.tokenizer.chat_template
        self.tokenizer.chat_template = self.chat_template
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            self.tokenizer.chat_template = tokenizer_chat_template

    # ----------------------------------------------------------------------------------------------------------
    # text side

    def format_image(self, image_codes) -> str:
        """The text of one image given by its codes: `<img><img_00012>...</img>` (`ValueError` when a code is out
        of range or the count is not `tokens_per_image`)."""
        body = "".join(
            self.image_code_token_format % code for code in self._one_image(image_codes, "image_codes")
        )
        return f"{self.boi_token}{body}{self.eoi_token}"

    def _one_image(self, image_codes, argument: str) -> list[int]:
        codes = self.image_token_layout.check_codes(integer_tensor(image_codes, argument), argument=argument)
        if codes.shape[0] != 1:
            raise ValueError(
                f"{argument} must be one image ([{self.tokens_per_image}] codes), got {codes.shape[0]}"
            )
        return codes[0].tolist()

    def _process_images(self, images, **kwargs):
        # apply_chat_template passes one list of images per conversation; the model takes them in order
        return super()._process_images(make_flat_list_of_images(images), **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.boi_token + self.image_token * self.tokens_per_image + self.eoi_token

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        data = {}
        if image_sizes is not None:
            data["num_image_tokens"] = [self.tokens_per_image + 2] * len(image_sizes)
            data["num_image_patches"] = [1] * len(image_sizes)
        return MultiModalData(**data)

    def apply_chat_template(self, conversation, chat_template: str | None = None, **kwargs):
        """Render (and optionally tokenize) chat messages; see `ProcessorMixin.apply_chat_template`.
        `chat_template` may be `"vicuna"` or `"llama2"`. Messages may be dicts, dataclasses or pydantic models, as
        upstream. The template variables `boi_token`, `eoi_token`, `image_token` and `image_code_token_format`
        default to the processor's; keyword arguments override them. `num_frames=` sets the frames sampled from
        each video item without its own `"num_frames"` (default: the processor's `num_frames`).

        Messages are checked first: roles `"system"` (first message only), `"user"` and `"assistant"`; content a
        string or a list of `{"type": "text", "text": str}`, `{"type": "image", ...}` and `{"type": "video",
        "video": frames | path | URL, "num_frames": int (optional)}` items (image codes are checked too, and a video
        is read and written as image items of its sampled frames); anything else is a `ValueError`/`TypeError`
        naming the message. Text is text: control tokens typed in it (`<img>`, `<img_00042>`, `<image>`, `</s>`,
        the `video_token`, ...) are broken by an invisible word joiner (U+2060) so that the tokenizer reads them as
        characters; images enter only as image items."""
        if isinstance(conversation, (list, tuple)):
            if not conversation:
                raise ValueError("`conversation` must hold at least one message, got an empty list")
            if isinstance(conversation[0], (list, tuple)) and not all(
                isinstance(messages, (list, tuple)) for messages in conversation
            ):
                raise TypeError(
                    "a batch of conversations must be a list of lists of messages, got "
                    f"{[type(messages).__name__ for messages in conversation]}"
                )
        elif not hasattr(conversation, "messages"):
            raise TypeError(
                "`conversation` must be a list of messages (dicts with 'role' and 'content') or a list of such "
                f"lists, got {type(conversation).__name__}"
            )
        # message objects become dicts first, as upstream does, so that the messages can be checked
        conversations, is_batched = self._normalize_conversations(conversation)
        control_tokens = _control_token_pattern((*self.tokenizer.added_tokens_encoder, self.video_token))
        num_frames = kwargs.pop("num_frames", None)
        num_frames = self.num_frames if num_frames is None else check_num_frames(num_frames, "`num_frames`")
        videos_by_row = [[] for _ in conversations]  # (name, frames, frame count) of each video read
        conversations = [
            self._checked_messages(messages, control_tokens, num_frames, videos)
            for messages, videos in zip(conversations, videos_by_row, strict=True)
        ]
        processor_template_variables = {
            "boi_token": self.boi_token,
            "eoi_token": self.eoi_token,
            "image_token": self.image_token,
            "image_code_token_format": self.image_code_token_format,
        }
        outputs = super().apply_chat_template(
            conversations if is_batched else conversations[0],
            chat_template=self.check_chat_template(chat_template),
            **{**processor_template_variables, **kwargs},
        )
        if kwargs.get("tokenize"):
            self._check_prompt_lengths(
                outputs if kwargs.get("return_dict") else {"input_ids": outputs}, videos_by_row
            )
        return outputs

    def check_chat_template(self, chat_template: str | None) -> str | None:
        """`chat_template` if it names one of the processor's templates or is a Jinja template (or is `None`);
        otherwise a `ValueError`: a misspelt name would be rendered as a constant template."""
        named = self.chat_template if isinstance(self.chat_template, dict) else {}
        if chat_template is None or (
            isinstance(chat_template, str)
            and (chat_template in named or "{{" in chat_template or "{%" in chat_template)
        ):
            return chat_template
        raise ValueError(
            f"`chat_template` must name one of the processor's templates {sorted(named)} or be a Jinja template, "
            f"got {chat_template!r}"
        )

    def _checked_messages(
        self, messages: list[dict], control_tokens: re.Pattern, num_frames: int, videos_read: list
    ) -> list[dict]:
        if not messages:
            raise ValueError("a conversation must hold at least one message, got none")
        checked = []
        for position, message in enumerate(messages):
            role = message.get("role")
            if role not in ("system", "user", "assistant") or (role == "system" and position > 0):
                raise ValueError(
                    f"message {position} must have role 'user' or 'assistant' (or 'system' as the first message), "
                    f"got {role!r}"
                )
            if "content" not in message:
                raise ValueError(f"message {position} ({role}) has no 'content'")
            content = self._checked_content(
                message["content"], f"message {position} ({role})", control_tokens, num_frames, videos_read
            )
            checked.append({**message, "content": content})
        return checked

    def _checked_content(
        self, content, where: str, control_tokens: re.Pattern, num_frames: int, videos_read: list
    ) -> str | list[dict]:
        # Text is escaped after adjacent text items are joined: the template concatenates them, and two pieces
        # such as "<img_000" and "42>" would otherwise join into a control token.
        if isinstance(content, str):
            return _escape_control_tokens(content, control_tokens)
        if not isinstance(content, (list, tuple)):
            raise TypeError(
                f"the content of {where} must be a string or a list of items ({{'type': 'text', 'text': ...}}, "
                f"{{'type': 'image', ...}} or {{'type': 'video', ...}}), got {type(content).__name__}"
            )
        items = []
        for index, item in enumerate(content):
            if not isinstance(item, dict):
                raise TypeError(
                    f"item {index} of {where} must be a dict such as {{'type': 'text', 'text': ...}}, got "
                    f"{type(item).__name__}"
                )
            item_type = item.get("type")
            if item_type not in _CHAT_ITEM_TYPES:
                raise ValueError(
                    f"item {index} of {where} must have 'type' 'text', 'image' or 'video', got {item_type!r} "
                    f"(keys {sorted(map(str, item))})"
                )
            if item_type == "image":
                if item.get("codes") is not None:
                    item = {**item, "codes": self._one_image(item["codes"], "codes of a chat image")}
                items.append(item)
            elif item_type == "video":
                items.extend(
                    self._video_item_frames(item, f"item {index} of {where}", num_frames, videos_read)
                )
            elif not isinstance(item.get("text"), str):
                raise TypeError(
                    f"text item {index} of {where} must have a string 'text', got {type(item.get('text')).__name__}"
                )
            elif items and items[-1]["type"] == "text":
                items[-1] = {**items[-1], "text": items[-1]["text"] + item["text"]}
            else:
                items.append(item)
        return [
            {**item, "text": _escape_control_tokens(item["text"], control_tokens)}
            if item["type"] == "text"
            else item
            for item in items
        ]

    def _video_item_frames(self, item: dict, name: str, num_frames: int, videos_read: list) -> list[dict]:
        """The image items of the sampled frames of a chat video item; the video is recorded in `videos_read`."""
        sources = [key for key in ("video", "url", "path") if item.get(key) is not None]
        if len(sources) != 1:
            raise ValueError(
                f"video {name} must give its video under one key, 'video' (frames, a path or a URL), 'url' or "
                f"'path', got keys {sorted(map(str, item))}"
            )
        if item.get("num_frames") is not None:
            num_frames = check_num_frames(item["num_frames"], f"'num_frames' of video {name}")
        video_name = f"the video of {name}"
        frames, total_num_frames = self._video_frames(item[sources[0]], num_frames, video_name)
        videos_read.append((video_name, len(frames), total_num_frames))
        return [{"type": "image", "image": frame} for frame in frames]

    # ----------------------------------------------------------------------------------------------------------
    # outputs

    def parse_generation(
        self, token_ids, skip_special_tokens: bool = True
    ) -> list[str | ImageSegment] | list[list]:
        """Split ids (one sequence, or a batch [B, L]) into text segments and [`ImageSegment`]s; see
        [`parse_generation`]. `ValueError` for negative ids, which no tokenizer decodes."""
        ids = integer_tensor(token_ids, "token_ids")
        if ids.numel() and ids.min() < 0:
            raise ValueError(f"token_ids must be non-negative, got {int(ids.min())}")
        if ids.ndim == 2:
            return [self.parse_generation(row, skip_special_tokens) for row in ids]
        return parse_generation(ids, self.image_token_layout, self.tokenizer, skip_special_tokens)


SeedLlamaProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "CHAT_TEMPLATES",
    "LLAMA2_CHAT_TEMPLATE",
    "SeedLlamaProcessor",
    "VICUNA_CHAT_TEMPLATE",
    "default_chat_templates",
]
