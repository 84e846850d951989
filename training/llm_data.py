"""Sequences and batches for SEED-LLaMA training.

Images reach the language model already tokenized (``image_codes``: 32 SEED code ids per image, produced
offline). An image inside a token sequence is ``<img>`` + ``image_code_start_id + codes`` + ``</img>``.

Records come in the formats of `seed_hf.training.data` after `seed_hf.training.tokenize_images` replaced
their images by an ``image_codes`` column; :class:`SeedLlamaSequenceBuilder` turns each into
``{"input_ids", "labels"}``:

- image-caption ``{"text": str, "image_codes": [32 ints]}``: ``bos caption image eos`` or
  ``bos image caption eos``, the order drawn per sample from a generator seeded by (seed, index), so it is
  the same in every process and after a resume;
- interleaved documents ``{"texts": [...], "image_codes": [...]}``: position i holds a text or an image;
- chat ``{"messages": [...], "image_codes": [[32 ints], ...]}`` whose `content` is a string or a list of
  ``{"type": "text", "text": ...}`` / ``{"type": "image"}`` parts (the codes are taken in order), rendered
  with a chat template; labels are -100 everywhere except on the assistant turns. Text is text: control tokens
  typed in it (``<img>``, ``<img_00042>``, ``</s>``, ...) are broken by an invisible word joiner, as
  :meth:`~seed_hf.modeling.processing_seed_llama.SeedLlamaProcessor.apply_chat_template` does at inference, so
  images enter only as image parts.

Text is rendered with every image written as the two-token placeholder ``<img></img>``, tokenized once, and
the code ids are then inserted after each ``<img>`` with one vectorized ``numpy.insert``.

:func:`build_training_dataset` builds every record's sequence once with :meth:`datasets.Dataset.map` (cached
beside a dataset read from files, optionally in ``num_proc`` processes).

Batches are either padded (:class:`SeedLlamaPaddingCollator`) or packed (:class:`SeedLlamaPackingCollator`):
samples are laid end to end in rows of at most ``max_length`` tokens (flattened by transformers'
:class:`~transformers.DataCollatorWithFlattening`), their ``position_ids`` restarting at 0, and no
``attention_mask`` is sent. LLaMA's mask builder (``transformers.masking_utils.find_packed_sequence_indices``)
then splits every row into its samples, so attention never crosses two samples -- provided the model runs
without a KV cache (``use_cache=False``), as the mask builder only looks for packed sequences when there is none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import DataCollatorWithFlattening

from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout
from seed_hf.modeling.processing_seed_llama import _control_token_pattern, _escape_control_tokens

from .data import interleaved_segments, load_source
from .tokenize_images import load_tokenized_images

IGNORE_INDEX = -100


class SeedLlamaSequenceBuilder:
    """Turns one training record into ``{"input_ids": list[int], "labels": list[int]}``.

    Args:
        tokenizer ([`PreTrainedTokenizerFast`]): the SEED-LLaMA tokenizer (it must know `<img>` and `</img>`, and
            be a fast tokenizer for conversations: the assistant mask is read from its character offsets).
        layout ([`~seed_hf.modeling.generation_seed_llama.SeedImageTokenLayout`]): image token ids.
        max_length (`int`, *optional*): sequences are truncated to at most this many tokens, never inside an
            image (an image that does not fit is dropped with what follows it).
        image_first_probability (`float`, *optional*, defaults to 0.5): probability that a caption/image pair
            is written image-first (image -> caption, i.e. captioning) rather than caption-first (generation).
        seed (`int`, *optional*, defaults to 0): seed of the per-sample order draw.
        chat_template (`str`, *optional*): Jinja chat template for conversations (defaults to the tokenizer's); it
            must mark the assistant turns with ``{% generation %}`` blocks, as SEED-LLaMA's templates do.
    """

    def __init__(
        self,
        tokenizer,
        layout: SeedImageTokenLayout,
        max_length: int | None = None,
        image_first_probability: float = 0.5,
        seed: int = 0,
        chat_template: str | None = None,
    ):
        if not 0.0 <= image_first_probability <= 1.0:
            raise ValueError(f"`image_first_probability` must be in [0, 1], got {image_first_probability}")
        if max_length is not None and max_length < 2:
            raise ValueError(f"`max_length` must be at least 2, got {max_length}")
        self.tokenizer = tokenizer
        self.layout = layout
        self.max_length = max_length
        self.image_first_probability = image_first_probability
        self.seed = seed
        self.chat_template = chat_template
        boi, eoi = tokenizer.convert_ids_to_tokens([layout.boi_token_id, layout.eoi_token_id])
        self.image_placeholder = boi + eoi
        self.control_tokens = _control_token_pattern(tuple(tokenizer.added_tokens_encoder))

    def __call__(self, record: Mapping[str, Any], index: int) -> dict[str, list[int]]:
        if not isinstance(record, Mapping):
            raise TypeError(f"`record` must be a mapping, got {type(record).__name__}")
        image_codes = record.get("image_codes")
        if record.get("messages") is not None:
            return self.build_conversation(record["messages"], image_codes or [])
        if record.get("texts") is not None:
            return self.build_document(record["texts"], image_codes or [None] * len(record["texts"]))
        if record.get("text") is not None and image_codes is not None:
            # seeded by (seed, index): the same draw in every process, epoch and resumed run
            image_first = np.random.default_rng((self.seed, index)).random() < self.image_first_probability
            return self.build_caption_pair(record["text"], image_codes, image_first=bool(image_first))
        raise ValueError(
            "`record` must have `messages` (chat), `texts` (interleaved document) or `text` and `image_codes` "
            f"(image-caption pair); got keys {sorted(record)}"
        )

    def build_caption_pair(self, caption: str, image_codes, image_first: bool) -> dict[str, list[int]]:
        parts = [self.image_placeholder, caption] if image_first else [caption, self.image_placeholder]
        return self._encode_text("".join(parts), [image_codes])

    def build_document(self, texts: Sequence[str | None], image_codes: Sequence) -> dict[str, list[int]]:
        segments = interleaved_segments({"images": image_codes, "texts": texts})
        pieces = [self.image_placeholder if kind == "image" else value for kind, value in segments]
        images = [value for kind, value in segments if kind == "image"]
        return self._encode_text("".join(pieces), images)

    def build_conversation(
        self, messages: Sequence[Mapping[str, Any]], image_codes: Sequence
    ) -> dict[str, list[int]]:
        rendered_messages = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            elif not isinstance(content, Sequence):
                raise TypeError(
                    f"message `content` must be a string or a list of parts, got {type(content).__name__}"
                )
            # runs of text between images, escaped once joined: "<img_000" + "42>" must not form a control token
            runs = [[]]
            for part in content:
                if part.get("type") == "image":
                    runs.append([])
                elif part.get("type") == "text":
                    runs[-1].append(part["text"])
                else:
                    raise ValueError(
                        f"message parts must have type 'text' or 'image', got {part.get('type')!r}"
                    )
            text = self.image_placeholder.join(
                _escape_control_tokens("".join(run), self.control_tokens) for run in runs
            )
            rendered_messages.append({"role": message["role"], "content": text})

        # the template marks assistant turns with `{% generation %}`, which gives the mask of the trained tokens
        encoding = self.tokenizer.apply_chat_template(
            rendered_messages,
            chat_template=self.chat_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        input_ids = np.asarray(encoding["input_ids"], dtype=np.int64)
        trained = np.asarray(encoding["assistant_masks"], dtype=bool)
        if not trained.any():
            raise ValueError(
                "a conversation needs an assistant turn to train on, and the chat template must mark assistant turns "
                "with {% generation %} ... {% endgeneration %}"
            )
        return self._finish(
            input_ids, np.where(trained, input_ids, IGNORE_INDEX), list(image_codes), add_bos_eos=False
        )

    def _encode_text(self, text: str, images: list) -> dict[str, list[int]]:
        input_ids = np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        return self._finish(input_ids, input_ids.copy(), images, add_bos_eos=True)

    def _finish(
        self, input_ids: np.ndarray, labels: np.ndarray, images: list, add_bos_eos: bool
    ) -> dict[str, list[int]]:
        """Insert the image codes after each `<img>`, add `bos`/`eos` if asked, truncate."""
        boi_positions = np.flatnonzero(input_ids == self.layout.boi_token_id)
        if len(boi_positions) != len(images):
            raise ValueError(
                f"found {len(boi_positions)} `<img>` tokens for {len(images)} images: does the text contain a literal "
                f"{self.image_placeholder!r} or does the tokenizer not know the image tokens?"
            )
        if len(images):
            if (boi_positions + 1 >= len(input_ids)).any() or (
                input_ids[boi_positions + 1] != self.layout.eoi_token_id
            ).any():
                raise ValueError("every `<img>` placeholder must be directly followed by `</img>`")
            image_ids = self.layout.check_codes(images).numpy() + self.layout.image_code_start_id
            insert_at = np.repeat(boi_positions + 1, self.layout.tokens_per_image)
            # an image is trained on iff its `<img>` is
            image_labels = np.where(labels[boi_positions, None] == IGNORE_INDEX, IGNORE_INDEX, image_ids)
            input_ids = np.insert(input_ids, insert_at, image_ids.ravel())
            labels = np.insert(labels, insert_at, image_labels.ravel())

        if add_bos_eos:
            bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
            input_ids = np.concatenate([[bos], input_ids, [eos]])
            labels = np.concatenate([[bos], labels, [eos]])
        if self.max_length is not None and len(input_ids) > self.max_length:
            cut = self.max_length
            # an image cut short would teach the model to draw broken images: cut before its `<img>` instead
            boi_positions = np.flatnonzero(input_ids[:cut] == self.layout.boi_token_id)
            if len(boi_positions) and boi_positions[-1] + self.layout.tokens_per_image + 1 >= cut:
                cut = int(boi_positions[-1])
            input_ids, labels = input_ids[:cut], labels[:cut]
        return {"input_ids": input_ids.tolist(), "labels": labels.tolist()}


def load_records(source):
    """The records of one source: a `tokenize_images` output folder, or anything `data.load_source` opens."""
    if isinstance(source, (str, os.PathLike)) and any(Path(source).glob("codes-*.parquet")):
        return load_tokenized_images(source)
    return load_source(source)


def build_sequences(
    records: datasets.Dataset, builder: SeedLlamaSequenceBuilder, num_proc: int | None = None
) -> datasets.Dataset:
    """The ``{"input_ids", "labels"}`` of every record (`builder(record, index)`), built once by
    :meth:`datasets.Dataset.map`: cached beside a dataset read from files (processes that build the same cache
    file write it atomically, with identical contents) and run in ``num_proc`` processes."""
    return records.map(
        builder,
        with_indices=True,
        remove_columns=records.column_names,
        num_proc=num_proc,
        desc="Building sequences",
    )


def build_training_dataset(
    sources, builder: SeedLlamaSequenceBuilder, num_proc: int | None = None
) -> datasets.Dataset:
    """The sequences of the records of every source (a path, a `datasets.Dataset` or a list of them), in order.

    A record's index (which seeds its caption/image order draw) is its position in its own source."""
    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Sequence):
        sources = [sources]
    if not sources:
        raise ValueError("`train_files` must name at least one source")
    return datasets.concatenate_datasets(
        [build_sequences(load_records(source), builder, num_proc=num_proc) for source in sources]
    )


# kept: transformers' `DataCollatorForSeq2Seq` needs a tokenizer and pads on its `padding_side` (left for SEED-LLaMA,
# for batched generation); this collator is built from the pad id alone and always pads on the right
class SeedLlamaPaddingCollator:
    """Pads built sequences on the right (labels with -100) and returns an ``attention_mask``.

    Padding is always on the right whatever the tokenizer's ``padding_side`` (left, for batched generation):
    LLaMA numbers positions from the start of the row, so every sample starts at position 0, as in a packed row.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("`pad_token_id` must be set to pad batches")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        lengths = [len(feature["input_ids"]) for feature in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for row, (feature, length) in enumerate(zip(features, lengths, strict=True)):
            input_ids[row, :length] = torch.as_tensor(feature["input_ids"])
            labels[row, :length] = torch.as_tensor(feature["labels"])
        attention_mask = (torch.arange(width)[None] < torch.as_tensor(lengths)[:, None]).long()
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class SeedLlamaPackingCollator:
    """Packs a batch's samples into as few rows of at most ``row_length`` tokens as possible, without padding
    inside a row and without attention between samples.

    Each row is flattened by transformers' :class:`~transformers.DataCollatorWithFlattening` (``position_ids``
    restarting at 0 for every sample, the first label of every sample set to -100 so that no sample predicts
    the next one's first token); rows are then padded to the longest, the padding forming a segment of its own
    (positions 0, 1, ...) whose labels are -100. No ``attention_mask`` is returned: the model splits rows into
    samples from the ``position_ids``.

    Rows are filled first-fit by decreasing length; the samples of a batch are the same as unpacked, so the
    loss and gradients are too (the samples' order inside the batch does not matter).

    Args:
        pad_token_id (`int`): id written in the padding at the end of short rows.
        row_length (`int`, *optional*): maximum tokens per row; `None` packs the whole batch into one row (then
            attention costs grow with the square of the batch's token count).
    """

    def __init__(self, pad_token_id: int, row_length: int | None = None):
        if pad_token_id is None:
            raise ValueError("`pad_token_id` must be set to pad packed rows")
        if row_length is not None and row_length < 1:
            raise ValueError(f"`row_length` must be a positive number of tokens, got {row_length}")
        self.pad_token_id = pad_token_id
        self.row_length = row_length
        self.flatten = DataCollatorWithFlattening(return_position_ids=True)

    def _rows(self, features):
        if self.row_length is None:
            return [list(features)]
        rows, room = [], []
        for feature in sorted(features, key=lambda feature: len(feature["input_ids"]), reverse=True):
            length = len(feature["input_ids"])
            target = next((index for index, free in enumerate(room) if free >= length), None)
            if target is None:
                rows.append([feature])
                room.append(self.row_length - length)
            else:
                rows[target].append(feature)
                room[target] -= length
        return rows

    def __call__(self, features: list[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        rows = [self.flatten(row) for row in self._rows(features)]
        width = max(row["input_ids"].shape[1] for row in rows)
        batch = {
            "input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
            "position_ids": torch.zeros((len(rows), width), dtype=torch.long),
        }
        for index, row in enumerate(rows):
            length = row["input_ids"].shape[1]
            for key in batch:
                batch[key][index, :length] = row[key][0]
            # the padding restarts at position 0: a segment of its own
            batch["position_ids"][index, length:] = torch.arange(width - length)
        return batch


def build_data_collator(pad_token_id: int, packing: bool, row_length: int | None = None):
    """The batch collator of a run: packing into rows of at most ``row_length`` tokens, or right padding."""
    if packing:
        return SeedLlamaPackingCollator(pad_token_id, row_length=row_length)
    return SeedLlamaPaddingCollator(pad_token_id)
