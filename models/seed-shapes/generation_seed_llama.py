"""Generation helpers of SEED-LLaMA: the image-token layout, constrained decoding, image-only classifier-free
guidance and the parser of generated ids into text and images.

The logits processors know where every row stands in an image from a `SeedImageSpanTracker`: in greedy search and
sampling it reads only the ids appended since the previous step; otherwise (beam search, assisted decoding, which
reorder or rewrite rows) the last `tokens_per_image + 1` ids of every row, all rows at once. Either way the cost does
not grow with the sequence length.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, UnbatchedClassifierFreeGuidanceLogitsProcessor
from transformers.utils import is_torchdynamo_compiling


def integer_tensor(value, argument: str, what: str = "integers") -> torch.Tensor:
    """`value` (a tensor, array or nested list of ints) as a tensor: `TypeError` naming `argument` when it is not
    one, `ValueError` when it holds no integers ("`argument` must hold `what`")."""
    try:
        tensor = torch.as_tensor(value)
    except (
        RuntimeError,
        TypeError,
        ValueError,
    ) as error:  # None, strings, ragged lists, dicts, object arrays
        raise TypeError(
            f"{argument} must be a tensor, array or list of ints, got {type(value).__name__} ({error})"
        ) from error
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{argument} must hold {what}, got dtype {tensor.dtype}")
    return tensor


@dataclass(frozen=True)
class SeedImageTokenLayout:
    """
    Where the image tokens of a SEED-LLaMA vocabulary are.

    Args:
        image_code_start_id (`int`): id of code 0 (`<img_00000>`).
        num_image_codes (`int`): number of codes; code `c` has id `image_code_start_id + c`.
        tokens_per_image (`int`): codes per image (32).
        boi_token_id (`int`): id of `<img>`.
        eoi_token_id (`int`): id of `</img>`.
        image_placeholder_id (`int`, *optional*): id of the `<image>` placeholder of prompt images given as pixels.
    """

    image_code_start_id: int
    num_image_codes: int
    tokens_per_image: int
    boi_token_id: int
    eoi_token_id: int
    image_placeholder_id: int | None = None

    @classmethod
    def from_config(cls, config) -> SeedImageTokenLayout:
        return cls(
            image_code_start_id=config.image_code_start_id,
            num_image_codes=config.num_image_codes,
            tokens_per_image=config.tokens_per_image,
            boi_token_id=config.boi_token_id,
            eoi_token_id=config.eoi_token_id,
            image_placeholder_id=config.image_placeholder_id,
        )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        tokens_per_image: int = 32,
        image_code_token_format: str = "<img_%05d>",
        boi_token: str = "<img>",
        eoi_token: str = "</img>",
        image_token: str | None = "<image>",
    ) -> SeedImageTokenLayout:
        """Read the layout from a tokenizer's vocabulary; `ValueError` when the code tokens are not
        `<img_00000>` ... at consecutive ids, or a named token is missing (`image_token=None`: no placeholder)."""
        vocab = tokenizer.get_vocab()
        pattern = re.compile(re.escape(image_code_token_format).replace("%05d", r"(\d{5})"))
        code_ids = {
            int(match.group(1)): token_id
            for token, token_id in vocab.items()
            if (match := pattern.fullmatch(token))
        }
        if not code_ids:
            raise ValueError(f"the tokenizer has no image tokens {image_code_token_format % 0} ...")
        start = code_ids.get(0)
        misplaced = sorted(
            code for code, token_id in code_ids.items() if start is None or token_id != start + code
        )
        if start is None or misplaced or max(code_ids) != len(code_ids) - 1:
            shown = ", ".join(image_code_token_format % code for code in misplaced[:5])
            raise ValueError(
                f"the image tokens are not contiguous from {image_code_token_format % 0} (id {start}): codes must be "
                f"0..{len(code_ids) - 1} at consecutive ids; misplaced: {shown or 'missing code numbers'}"
            )

        def token_id(token: str) -> int:
            if token not in vocab:
                raise ValueError(f"the tokenizer has no {token} token")
            return vocab[token]

        return cls(
            image_code_start_id=start,
            num_image_codes=len(code_ids),
            tokens_per_image=tokens_per_image,
            boi_token_id=token_id(boi_token),
            eoi_token_id=token_id(eoi_token),
            image_placeholder_id=None if image_token is None else token_id(image_token),
        )

    @property
    def image_code_end_id(self) -> int:
        """One past the id of the last code."""
        return self.image_code_start_id + self.num_image_codes

    def is_code(self, token_ids: torch.Tensor) -> torch.Tensor:
        return (token_ids >= self.image_code_start_id) & (token_ids < self.image_code_end_id)

    def check_codes(self, image_codes, argument: str = "image_codes") -> torch.LongTensor:
        """Return `image_codes` as a LongTensor [num_images, tokens_per_image], or raise a `ValueError` naming
        `argument` when the shape or a value is wrong (`TypeError` when `image_codes` is not numbers at all)."""
        codes = integer_tensor(image_codes, argument, "integer codes").long()
        if codes.ndim == 1:
            codes = codes.unsqueeze(0)
        if codes.ndim != 2 or codes.shape[1] != self.tokens_per_image:
            raise ValueError(
                f"{argument} must have shape [num_images, {self.tokens_per_image}] (or [{self.tokens_per_image}] for "
                f"one image), got {list(torch.as_tensor(image_codes).shape)}"
            )
        # the range check reads values: done eagerly, left out of a traced graph
        if (
            not is_torchdynamo_compiling()
            and codes.numel()
            and (codes.min() < 0 or codes.max() >= self.num_image_codes)
        ):
            raise ValueError(
                f"{argument} must lie in [0, {self.num_image_codes}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return codes


def image_progress(input_ids: torch.LongTensor, layout: SeedImageTokenLayout) -> torch.LongTensor:
    """
    For every row, how many tokens follow the `<img>` of an image that is still open at the end of `input_ids`,
    or -1 outside an image. An image is open when its `<img>` is among the last `tokens_per_image + 1` ids and no
    `</img>` follows it (under the constraints an image always closes after exactly `tokens_per_image` codes).
    """
    window = input_ids[:, -(layout.tokens_per_image + 1) :]
    if window.shape[1] == 0:  # generation from inputs_embeds starts with no ids
        return torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=input_ids.device)
    positions = torch.arange(window.shape[1], device=input_ids.device).expand_as(window)
    missing = torch.full_like(window, -1)
    last_boi = torch.where(window == layout.boi_token_id, positions, missing).amax(dim=1)
    last_eoi = torch.where(window == layout.eoi_token_id, positions, missing).amax(dim=1)
    inside = (last_boi >= 0) & (last_boi > last_eoi)
    return torch.where(inside, window.shape[1] - 1 - last_boi, torch.full_like(last_boi, -1))


class SeedImageSpanTracker:
    r"""
    [`image_progress`] of every row, kept up to date. With `incremental=True` the first call scans the prompt and
    later calls read only the ids appended since the previous call; that needs rows that only grow (greedy search,
    sampling), so with `incremental=False` (beam search and assisted decoding reorder or rewrite rows) every call
    scans the last `tokens_per_image + 1` ids again. Shared by the constraint and guidance processors of one
    `generate` call, so that each step reads the new ids once.

    Args:
        layout (`SeedImageTokenLayout`): the image-token ids.
        prompt_tail_ids (`torch.LongTensor` of shape `(batch, n)`, *optional*): the last ids of a prompt that
            `generate` does not pass on as ids (an `inputs_embeds`-only prompt), so that an image the prompt opened
            is continued; only `<img>`/`</img>` ids matter, other positions may hold any other value.
        incremental (`bool`, *optional*, defaults to `True`): read only the new ids after the first call.
    """

    def __init__(
        self,
        layout: SeedImageTokenLayout,
        prompt_tail_ids: torch.LongTensor | None = None,
        incremental: bool = True,
    ):
        self.layout = layout
        self.prompt_tail_ids = prompt_tail_ids
        self.incremental = incremental
        self._progress: torch.LongTensor | None = None
        self._length = 0

    def _scan(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        context = input_ids
        if self.prompt_tail_ids is not None:
            tail = self.prompt_tail_ids.to(input_ids.device)
            if tail.shape[0] != input_ids.shape[0]:  # rows expanded by beam search / num_return_sequences
                tail = tail.repeat_interleave(input_ids.shape[0] // tail.shape[0], dim=0)
            context = torch.cat([tail, input_ids], dim=1)
        return image_progress(context, self.layout)

    def __call__(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """The progress of every row at the end of `input_ids` (see [`image_progress`])."""
        length = input_ids.shape[1]
        progress = self._progress
        if (
            not self.incremental
            or progress is None
            or length < self._length
            or progress.shape[0] != input_ids.shape[0]
        ):
            progress = self._scan(input_ids)
        else:
            layout = self.layout
            for token in input_ids[:, self._length :].unbind(dim=1):
                # the same rule as image_progress: `<img>` opens, `</img>` closes, and an image whose `<img>` is
                # more than tokens_per_image ids back is no longer open
                progress = torch.where(
                    token == layout.boi_token_id,
                    0,
                    torch.where((token == layout.eoi_token_id) | (progress < 0), -1, progress + 1),
                )
                progress = progress.masked_fill(progress > layout.tokens_per_image, -1)
        self._progress, self._length = progress, length
        return progress


class SeedImageConstraintLogitsProcessor(LogitsProcessor):
    r"""
    Keeps generated images well formed: after `<img>` exactly `tokens_per_image` image codes, then `</img>`;
    image codes, `</img>` and the `<image>` placeholder never appear outside an image; `<img>` is only allowed
    when the `max_length` budget leaves room for a whole image. Optionally forces the first generated token
    to be `<img>`, so that the answer starts with an image.

    Apply it before the sampling warpers (temperature, top-k/p), as `generate(logits_processor=...)` does.

    Args:
        layout (`SeedImageTokenLayout`): the image-token ids.
        prompt_length (`int`, *optional*, defaults to 0): length of the prompt ids, to find the first generated
            position for `force_image`.
        max_length (`int`, *optional*): total length (prompt + new tokens) generation stops at; without it an
            image may be cut by the length limit.
        force_image (`bool`, *optional*, defaults to `False`): allow only `<img>` as the first generated token.
        prompt_tail_ids (`torch.LongTensor` of shape `(batch, n)`, *optional*): the last ids of a prompt that
            `generate` does not pass on as ids (an `inputs_embeds`-only prompt), so that an image the prompt opened
            is continued; only `<img>`/`</img>` ids matter, other positions may hold any other value.
        tracker (`SeedImageSpanTracker`, *optional*): where the rows stand in their images, shared with other
            processors (it then holds the prompt tail); default: one that scans the ids at every call.
    """

    def __init__(
        self,
        layout: SeedImageTokenLayout,
        prompt_length: int = 0,
        max_length: int | None = None,
        force_image: bool = False,
        prompt_tail_ids: torch.LongTensor | None = None,
        tracker: SeedImageSpanTracker | None = None,
    ):
        if tracker is not None and prompt_tail_ids is not None:
            raise ValueError("give prompt_tail_ids to the tracker, not to both the tracker and the processor")
        if (
            force_image
            and max_length is not None
            and max_length - prompt_length < layout.tokens_per_image + 2
        ):
            raise ValueError(
                f"force_image needs room for a whole image ({layout.tokens_per_image + 2} tokens) but only "
                f"{max_length - prompt_length} new tokens are allowed (max_new_tokens / max_length)"
            )
        self.layout = layout
        self.prompt_length = prompt_length
        self.max_length = max_length
        self.force_image = force_image
        self.tracker = tracker or SeedImageSpanTracker(layout, prompt_tail_ids, incremental=False)
        self._masks: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def _token_masks(self, vocab_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (vocab_size, device)
        if key not in self._masks:
            ids = torch.arange(vocab_size, device=device)
            layout = self.layout
            code = layout.is_code(ids)
            end = ids == layout.eoi_token_id
            begin = ids == layout.boi_token_id
            text = ~(code | end | (ids == layout.image_placeholder_id))
            self._masks[key] = (code, end, begin, text)
        return self._masks[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        code, end, begin, text = self._token_masks(scores.shape[-1], scores.device)
        progress = self.tracker(input_ids)[:, None]
        outside_allowed = text
        current_length = input_ids.shape[1]
        if (
            self.max_length is not None
            and current_length + self.layout.tokens_per_image + 2 > self.max_length
        ):
            outside_allowed = text & ~begin
        if self.force_image and current_length == self.prompt_length:
            outside_allowed = begin
        allowed = torch.where(
            progress < 0,
            outside_allowed,
            torch.where(progress < self.layout.tokens_per_image, code, end),
        )
        return scores.masked_fill(~allowed, -float("inf"))

    def image_token_range(self, input_ids: torch.LongTensor) -> tuple[int, int] | None:
        """
        `(start, end)`: the smallest range of ids holding the image codes, `<img>` and `</img>`, when every row may
        only choose among those next (all rows inside an image, or the forced first `<img>`); `None` otherwise.
        The model need compute the logits of these ids only: this processor sets all others to `-inf` anyway.
        """
        first_forced = self.force_image and input_ids.shape[1] == self.prompt_length
        if not first_forced and bool((self.tracker(input_ids) < 0).any()):
            return None
        layout = self.layout
        ids = (
            layout.image_code_start_id,
            layout.image_code_end_id - 1,
            layout.boi_token_id,
            layout.eoi_token_id,
        )
        return min(ids), max(ids) + 1


class SeedImageGuidanceLogitsProcessor(UnbatchedClassifierFreeGuidanceLogitsProcessor):
    r"""
    Classifier-free guidance for image codes only: inside an open image the scores become
    `guidance_scale * (conditional - unconditional) + unconditional` (log-probabilities), where the
    unconditional branch is the model run on `unconditional_ids` (default: the last prompt token, e.g. `<img>`)
    followed by the generated tokens; outside images the scores are left as they are, so text is unguided.

    Args:
        guidance_scale (`float`): > 1 strengthens the prompt's influence on the images.
        model: the SEED-LLaMA model (runs the unconditional branch with its own cache).
        layout (`SeedImageTokenLayout`): the image-token ids.
        unconditional_ids (`torch.LongTensor`, *optional*): the unconditional (negative) prompt, [1 or batch, L].
        unconditional_attention_mask (`torch.LongTensor`, *optional*): its attention mask.
        use_cache (`bool`, *optional*, defaults to `True`): cache the unconditional branch.
        tracker (`SeedImageSpanTracker`, *optional*): where the rows stand in their images, shared with other
            processors; default: one that scans the ids at every call.
    """

    def __init__(
        self,
        guidance_scale: float,
        model,
        layout: SeedImageTokenLayout,
        unconditional_ids: torch.LongTensor | None = None,
        unconditional_attention_mask: torch.LongTensor | None = None,
        use_cache: bool = True,
        tracker: SeedImageSpanTracker | None = None,
    ):
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise TypeError(f"image_guidance_scale must be a number, got {type(guidance_scale).__name__}")
        if not math.isfinite(guidance_scale) or guidance_scale <= 0:
            raise ValueError(f"image_guidance_scale must be a positive finite number, got {guidance_scale}")
        super().__init__(guidance_scale, model, unconditional_ids, unconditional_attention_mask, use_cache)
        self.layout = layout
        self.tracker = tracker or SeedImageSpanTracker(layout, incremental=False)

    def get_unconditional_logits(self, input_ids):
        context = self.unconditional_context
        if context["first_pass"]:
            for key in ("input_ids", "attention_mask"):
                if context[key] is not None:
                    # one negative prompt may serve the whole batch
                    context[key] = context[key].to(input_ids.device).expand(input_ids.shape[0], -1)
        return super().get_unconditional_logits(input_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # the unconditional branch runs at every step so that its cache follows the generated tokens
        unconditional = torch.log_softmax(self.get_unconditional_logits(input_ids)[:, -1].float(), dim=-1)
        conditional = torch.log_softmax(scores.float(), dim=-1)
        guided = (self.guidance_scale * (conditional - unconditional) + unconditional).to(scores.dtype)
        inside = self.tracker(input_ids)
        inside = (inside >= 0) & (inside < self.layout.tokens_per_image)
        return torch.where(inside[:, None], guided, scores)


class SeedGeneratorSamplingLogitsProcessor(LogitsProcessor):
    r"""
    Samples the next token with its own `torch.Generator` instead of the global random state, so that concurrent
    seeded generations (threads of a server) do not draw from each other's randomness. It adds Gumbel noise
    `-log(-log(U))`, `U ~ Uniform(0, 1)` drawn from `generator`, to the scores: the greedy choice
    `argmax(scores + noise)` is then a sample of `softmax(scores)` (the Gumbel-max trick).

    Put it last, after the sampling warpers (temperature, top-k/p, ...), and generate with `do_sample=False`:
    `generate(do_sample=False, logits_processor=[*warpers, SeedGeneratorSamplingLogitsProcessor(generator)])`.

    Args:
        generator (`torch.Generator`): the randomness of the sampling; the noise is drawn on its device (the CPU
            for `torch.Generator()`) and moved to the scores, so that a seed draws the same noise on any device.
    """

    def __init__(self, generator: torch.Generator):
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # float64: U is exactly 0 (noise -inf) with probability 2^-53, and then the smallest double stands in
        uniform = torch.rand(
            scores.shape, generator=self.generator, device=self.generator.device, dtype=torch.float64
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


@dataclass
class ImageSegment:
    """
    One image found in a sequence of ids.

    Attributes:
        codes (`torch.LongTensor` or `None`): the codes read (0-based, 1-D, possibly fewer or more than
            `tokens_per_image`); `None` for a prompt image given as pixels (`<image>` placeholders), whose codes
            are not in the ids.
        opened (`bool`): the image starts with `<img>` (`False` for image codes or `</img>` outside an image).
        closed (`bool`): the image ends with `</img>`.
        tokens_per_image (`int`): the number of codes of a complete image.
    """

    codes: torch.LongTensor | None
    opened: bool
    closed: bool
    tokens_per_image: int

    @property
    def num_codes(self) -> int:
        return self.tokens_per_image if self.codes is None else int(self.codes.numel())

    @property
    def truncated(self) -> bool:
        """Fewer codes than a complete image (generation stopped, or something else came, before the end)."""
        return self.num_codes < self.tokens_per_image

    @property
    def complete(self) -> bool:
        """`<img>`, exactly `tokens_per_image` codes, `</img>`: an image the de-tokenizer can draw."""
        return self.opened and self.closed and self.num_codes == self.tokens_per_image


def parse_generation(
    token_ids, layout: SeedImageTokenLayout, tokenizer=None, skip_special_tokens: bool = True
) -> list[str | ImageSegment]:
    """
    Split one sequence of ids into an ordered list of text segments (`str`) and images (`ImageSegment`).
    Malformed images are kept and flagged (`truncated`, `complete`), never dropped: an image cut short by the
    end of the sequence, by text or by another `<img>`; more than `tokens_per_image` codes; codes or `</img>`
    outside an image.

    Args:
        token_ids (`torch.Tensor` or `list[int]`): one sequence (1-D).
        layout (`SeedImageTokenLayout`): the image-token ids.
        tokenizer (*optional*): decodes the text runs; without it text segments are lists of ids.
        skip_special_tokens (`bool`, *optional*, defaults to `True`): passed to `tokenizer.decode` (drops `<s>`,
            `</s>` and padding from the text).
    """
    ids = torch.as_tensor(token_ids).long().cpu()
    if ids.ndim != 1:
        raise ValueError(f"token_ids must be one sequence (1-D), got shape {list(ids.shape)}")
    # kind of every token: 0 text, 1 code, 2 <img>, 3 </img>, 4 placeholder; then work on runs of one kind
    kinds = torch.zeros_like(ids)
    kinds[layout.is_code(ids)] = 1
    kinds[ids == layout.boi_token_id] = 2
    kinds[ids == layout.eoi_token_id] = 3
    if layout.image_placeholder_id is not None:
        kinds[ids == layout.image_placeholder_id] = 4
    run_kinds, run_lengths = torch.unique_consecutive(kinds, return_counts=True)
    run_starts = torch.cumsum(run_lengths, 0) - run_lengths

    segments: list[str | ImageSegment] = []
    open_image: dict | None = None

    def new_image(opened: bool) -> dict:
        return {"codes": [], "placeholder": False, "opened": opened}

    def finish(image: dict, closed: bool) -> None:
        codes = None if image["placeholder"] else torch.cat(image["codes"] or [ids.new_empty(0)])
        segments.append(ImageSegment(codes, image["opened"], closed, layout.tokens_per_image))

    def add_text(text_ids: torch.Tensor) -> None:
        if tokenizer is None:
            text = text_ids.tolist()
        else:
            text = tokenizer.decode(text_ids, skip_special_tokens=skip_special_tokens)
        if not text:
            return
        if segments and type(segments[-1]) is type(text):
            segments[-1] = segments[-1] + text
        else:
            segments.append(text)

    for kind, start, length in zip(
        run_kinds.tolist(), run_starts.tolist(), run_lengths.tolist(), strict=True
    ):
        run = ids[start : start + length]
        if kind == 0:
            if open_image is not None:
                finish(open_image, closed=False)
                open_image = None
            add_text(run)
        elif kind == 2:
            for _ in range(length):
                if open_image is not None:
                    finish(open_image, closed=False)
                open_image = new_image(opened=True)
        elif kind == 3:
            for _ in range(length):
                finish(open_image if open_image is not None else new_image(opened=False), closed=True)
                open_image = None
        else:
            if open_image is None:
                open_image = new_image(opened=False)
            if kind == 1:
                open_image["codes"].append(run - layout.image_code_start_id)
            else:
                open_image["placeholder"] = True
    if open_image is not None:
        finish(open_image, closed=False)
    return segments


__all__ = [
    "ImageSegment",
    "SeedGeneratorSamplingLogitsProcessor",
    "SeedImageConstraintLogitsProcessor",
    "SeedImageGuidanceLogitsProcessor",
    "SeedImageSpanTracker",
    "SeedImageTokenLayout",
    "image_progress",
    "integer_tensor",
    "parse_generation",
]
