"""Input checks and per-call state of [`SeedUnCLIPPipeline`] (`pipeline_seed_unclip.py`).

This file travels with saved de-tokenizers as remote code beside `pipeline_seed_unclip.py`, so it imports nothing
relatively: diffusers copies only the files a custom pipeline imports directly.
"""

import math
import threading
import weakref

import numpy as np
import torch

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class PerCall:
    """
    A pipeline attribute whose value belongs to the calling thread: the state diffusers keeps on the pipeline object
    during a call (`_interrupt`, `_guidance_scale`, `_num_timesteps`). A call sets it when it starts, a step callback
    may set `pipe._interrupt = True`, and the `interrupt` / `guidance_scale` properties read it, all in the thread of
    the call, so that concurrent calls of one pipeline neither see nor reset each other's state. The values are kept
    here, not on the pipeline, so that a pipeline still pickles and deep-copies (a copy has no call running).
    """

    def __init__(self, default=None):
        self.default = default
        self._threads = threading.local()  # per thread: {pipeline: value}

    def _values(self) -> weakref.WeakKeyDictionary:
        if not hasattr(self._threads, "values"):
            self._threads.values = weakref.WeakKeyDictionary()
        return self._threads.values

    def __get__(self, pipeline, owner=None):
        if pipeline is None:
            return self
        return self._values().get(pipeline, self.default)

    def __set__(self, pipeline, value) -> None:
        self._values()[pipeline] = value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_call_settings(num_inference_steps, guidance_scale, eta, output_type) -> None:
    """Refuse settings of a call that would fail deep inside diffusers or give a silently wrong image."""
    check_integer("num_inference_steps", num_inference_steps)
    if not _is_number(guidance_scale):
        # NaN would switch guidance off without a word (NaN > 1 is False)
        raise ValueError(f"`guidance_scale` must be a finite number, got {guidance_scale!r}")
    if not _is_number(eta) or eta < 0:
        raise ValueError(f"`eta` must be a non-negative number, got {eta!r}")
    if output_type not in OUTPUT_TYPES:
        # diffusers would fall back to "np" with a deprecation warning
        raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")


def check_integer(name: str, value, low: int = 1, end: int | None = None) -> None:
    """Refuse `value` unless it is an int in `[low, end)` (by default: a positive integer)."""
    if _is_count(value) and value >= low and (end is None or value < end):
        return
    if (low, end) == (1, None):
        expected = "a positive integer"
    else:
        expected = f"{'in' if _is_count(value) else 'an integer in'} [{low}, {end - 1}]"
    raise ValueError(f"`{name}` must be {expected}, got {value!r}")


def check_size(name: str, size, vae_scale_factor: int) -> None:
    if not _is_count(size) or size <= 0 or size % vae_scale_factor:
        raise ValueError(
            f"`{name}` must be a positive multiple of the VAE scale factor {vae_scale_factor}, got {size!r}"
        )


def check_generator(generator, num_images: int) -> None:
    generators = generator if isinstance(generator, list) else [generator]
    if generator is not None and not all(isinstance(item, torch.Generator) for item in generators):
        raise TypeError(
            f"`generator` must be a torch.Generator or a list of them, got {type(generator).__name__}"
        )
    if isinstance(generator, list) and len(generator) != num_images:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators but {num_images} images are requested"
        )


def check_conditions(
    image_codes,
    image_embeds,
    negative_image_codes,
    negative_image_embeds,
    embedding_dim: int,
    tokenizer_config,
) -> int:
    """Check the image condition of a call and its optional negative, given as codes (which need the SEED
    tokenizer's config, `tokenizer_config`: `None` for a pipeline without one) or as embeddings; return the batch
    size."""
    if (image_codes is None) == (image_embeds is None):
        raise ValueError("Pass exactly one of `image_codes` and `image_embeds`")
    if negative_image_codes is not None and negative_image_embeds is not None:
        raise ValueError("Pass at most one of `negative_image_codes` and `negative_image_embeds`")
    positive = "image_codes" if image_codes is not None else "image_embeds"
    batch_size = _check_condition(image_codes, image_embeds, positive, embedding_dim, tokenizer_config)
    if negative_image_codes is not None or negative_image_embeds is not None:
        negative = "negative_image_codes" if negative_image_codes is not None else "negative_image_embeds"
        negative_batch_size = _check_condition(
            negative_image_codes, negative_image_embeds, negative, embedding_dim, tokenizer_config
        )
        if negative_batch_size != batch_size:
            raise ValueError(
                f"`{negative}` must have one row per `{positive}` row ({batch_size}), got {negative_batch_size}"
            )
    return batch_size


def _check_condition(codes, embeds, argument: str, embedding_dim: int, tokenizer_config) -> int:
    if embeds is not None:
        if not isinstance(embeds, torch.Tensor):
            raise TypeError(f"`{argument}` must be a torch.Tensor, got {type(embeds)}")
        if embeds.ndim != 2 or embeds.shape[0] == 0 or embeds.shape[1] != embedding_dim:
            raise ValueError(
                f"`{argument}` must have shape [batch, {embedding_dim}], got {list(embeds.shape)}"
            )
        if not torch.isfinite(embeds).all():
            # NaN or inf would flow through the UNet and come out as a black image
            raise ValueError(f"`{argument}` must hold finite numbers, got NaN or inf values")
        return embeds.shape[0]
    if tokenizer_config is None:
        raise ValueError(f"`{argument}` needs a `seed_tokenizer`; this pipeline has none, pass embeddings")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"`{argument}` must hold integer codes, got dtype {codes.dtype}")
    num_tokens = tokenizer_config.num_query_tokens
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] != num_tokens:
        raise ValueError(f"`{argument}` must have shape [batch, {num_tokens}], got {list(codes.shape)}")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= tokenizer_config.num_codes:
        raise ValueError(
            f"`{argument}` must hold codes in [0, {tokenizer_config.num_codes}), got values in [{low}, {high}]"
        )
    return codes.shape[0]


def codes_tensor(codes, argument: str) -> torch.Tensor | None:
    """`codes` as one tensor `[batch, num_query_tokens]`: a tensor or array as it is, a list of 1-D code tensors or
    of lists of ints (one per image) stacked; the shape and values are checked by `check_condition`."""
    if codes is None or isinstance(codes, torch.Tensor):
        return codes
    expected = (
        f"`{argument}` must be a LongTensor [batch, num_query_tokens], or a list of 1-D code tensors or lists of "
        "ints (one per image)"
    )
    if isinstance(codes, np.ndarray):
        try:
            return torch.from_numpy(codes)
        except TypeError as error:  # object or string arrays
            raise TypeError(f"{expected}, got an array of dtype {codes.dtype}") from error
    if not isinstance(codes, (list, tuple)) or not codes:
        raise TypeError(f"{expected}, got {type(codes).__name__}{'' if codes else ' (empty)'}")
    rows = []
    for row in codes:
        if not isinstance(row, (torch.Tensor, np.ndarray, list, tuple)):
            raise TypeError(f"{expected}, got a list holding {type(row).__name__}")
        try:
            rows.append(torch.as_tensor(row))
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{expected}; an image's codes could not be read as numbers: {error}") from error
    shapes = sorted({tuple(row.shape) for row in rows})
    if len(shapes) != 1 or len(shapes[0]) != 1:
        raise ValueError(f"{expected}; got images of shapes {[list(shape) for shape in shapes]}")
    return torch.stack([row.to(rows[0].device) for row in rows])


def check_embedding_sizes(seed_tokenizer, image_normalizer) -> None:
    produced = seed_tokenizer.config.generation_embedding_dim
    expected = image_normalizer.config.embedding_dim
    if produced != expected:
        raise ValueError(
            f"`seed_tokenizer` makes {produced}-d generation embeddings but the unCLIP components expect "
            f"{expected}-d image embeddings"
        )


__all__ = [
    "OUTPUT_TYPES",
    "PerCall",
    "check_call_settings",
    "check_conditions",
    "check_embedding_sizes",
    "check_generator",
    "check_integer",
    "check_size",
    "codes_tensor",
]
