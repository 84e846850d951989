"""Training data for SEED: sources (`datasets`), record formats and the collators of the tokenizer stages.

Three record formats are understood, each a `datasets.Dataset` with fixed column names after loading:

- **image-caption**: `image` (an image) and `text` (its caption);
- **interleaved documents**: `images` and `texts`, two lists of the same length where position i holds
  either an image (and `texts[i]` is `None`) or a text (and `images[i]` is `None`), in reading order
  (the layout of OBELICS-style web documents);
- **chat / SFT**: `messages`, a list of `{"role", "content"}` turns whose `content` is a string or a list
  of `{"type": "text", "text": ...}` / `{"type": "image"}` parts (transformers' chat-template layout),
  and `images`, the images of the `{"type": "image"}` parts in order.

A source is a `datasets.Dataset`, a folder saved with `Dataset.save_to_disk`, a local image folder with a
`metadata.jsonl` / `metadata.csv` (read with `datasets`' `imagefolder` builder), Parquet / Arrow / JSON
files (a path or a glob), or a dataset name on the Hub. Column names that differ from the ones above are
mapped with the `*_column` arguments.
"""

import glob
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import torch

# File suffixes read with the `datasets` packaged builder of the same name.
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def load_source(
    source: "str | os.PathLike | datasets.Dataset", split: str = "train", cache_dir: str | None = None
) -> datasets.Dataset:
    """
    Open a data source as a `datasets.Dataset` (see the module docstring for what a source may be).

    Args:
        source: the dataset, a local path (saved dataset folder, image folder, file or glob) or a Hub name.
        split: split to read where the source has several.
        cache_dir: `datasets` cache folder for sources that are built (image folders, files, Hub sets).
    """
    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise ValueError(f"source has no split {split!r}; it has {sorted(source)}")
        return source[split]
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a datasets.Dataset, a path or a dataset name, got {type(source).__name__}"
        )
    path = os.fspath(source)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "state.json")) or os.path.exists(
            os.path.join(path, "dataset_dict.json")
        ):
            return load_source(datasets.load_from_disk(path), split=split)
        if not any(os.path.exists(os.path.join(path, f"metadata.{ext}")) for ext in ("jsonl", "csv")):
            raise ValueError(
                f"source folder {path!r} is neither a saved dataset (no state.json) nor an image folder with "
                "a metadata.jsonl or metadata.csv"
            )
        return datasets.load_dataset("imagefolder", data_dir=path, split=split, cache_dir=cache_dir)
    files = sorted(glob.glob(path))
    if files:
        suffixes = {os.path.splitext(name)[1].lower() for name in files}
        builders = {_FILE_BUILDERS.get(suffix) for suffix in suffixes}
        if len(builders) != 1 or None in builders:
            raise ValueError(
                f"source files must all be one of {sorted(_FILE_BUILDERS)}, got suffixes {sorted(suffixes)}"
            )
        return datasets.load_dataset(builders.pop(), data_files=files, split=split, cache_dir=cache_dir)
    if path.startswith((os.path.sep, ".", "~")) or os.path.splitext(path)[1].lower() in _FILE_BUILDERS:
        raise ValueError(f"source {path!r} does not exist")
    return datasets.load_dataset(path, split=split, cache_dir=cache_dir)


def _rename_columns(dataset: datasets.Dataset, mapping: dict[str, str], kind: str) -> datasets.Dataset:
    """Check that the source columns exist and rename them to the project's names."""
    missing = [source for source in mapping if source not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{kind} dataset has no column {missing[0]!r}; its columns are {dataset.column_names} "
            f"(pass the right name with {mapping[missing[0]]}_column=...)"
        )
    renames = {source: target for source, target in mapping.items() if source != target}
    if clashes := [target for target in renames.values() if target in dataset.column_names]:
        raise ValueError(f"{kind} dataset already has a column {clashes[0]!r}; rename or drop it first")
    return dataset.rename_columns(renames) if renames else dataset


def load_image_caption_dataset(
    source, image_column: str = "image", text_column: str = "text", split: str = "train", cache_dir=None
) -> datasets.Dataset:
    """An image-caption source with its columns named `image` and `text` (other columns are kept)."""
    dataset = _rename_columns(
        load_source(source, split, cache_dir), {image_column: "image", text_column: "text"}, "image-caption"
    )
    return load_image_dataset(dataset)


def load_image_dataset(
    source, image_column: str = "image", split: str = "train", cache_dir=None
) -> datasets.Dataset:
    """An image source (captions not needed) with its image column named `image` (other columns are kept)."""
    dataset = _rename_columns(load_source(source, split, cache_dir), {image_column: "image"}, "image")
    if not isinstance(dataset.features["image"], datasets.Image):
        # paths or bytes become decoded images; anything else fails here rather than in a collator
        dataset = dataset.cast_column("image", datasets.Image())
    return dataset


def load_interleaved_dataset(
    source, images_column: str = "images", texts_column: str = "texts", split: str = "train", cache_dir=None
) -> datasets.Dataset:
    """An interleaved-document source with its columns named `images` and `texts` (see module docstring)."""
    return _rename_columns(
        load_source(source, split, cache_dir), {images_column: "images", texts_column: "texts"}, "interleaved"
    )


def load_chat_dataset(
    source,
    messages_column: str = "messages",
    images_column: str = "images",
    split: str = "train",
    cache_dir=None,
) -> datasets.Dataset:
    """A chat / SFT source with its columns named `messages` and `images` (see module docstring)."""
    return _rename_columns(
        load_source(source, split, cache_dir), {messages_column: "messages", images_column: "images"}, "chat"
    )


def interleaved_segments(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """
    A document's content in reading order as `("image", image)` / `("text", text)` pairs, checking the
    interleaved layout (equal lengths, exactly one of image / text per position).
    """
    images, texts = document["images"], document["texts"]
    if len(images) != len(texts):
        raise ValueError(
            f"interleaved document: images and texts must have the same length, got {len(images)} and {len(texts)}"
        )
    segments = []
    for position, (image, text) in enumerate(zip(images, texts, strict=True)):
        if (image is None) == (text is None):
            raise ValueError(
                f"interleaved document: position {position} must hold exactly one of an image or a text"
            )
        segments.append(("image", image) if image is not None else ("text", text))
    return segments


def count_message_images(messages: Sequence[dict[str, Any]]) -> int:
    """Number of `{"type": "image"}` parts in chat messages (what `len(images)` must equal)."""
    count = 0
    for turn in messages:
        content = turn["content"]
        if not isinstance(content, str):
            count += sum(1 for part in content if part.get("type") == "image")
    return count


def check_chat_record(record: dict[str, Any]) -> None:
    """Raise `ValueError` when a chat record's image parts and its `images` do not match in number."""
    expected = count_message_images(record["messages"])
    if expected != len(record["images"] or []):
        raise ValueError(
            f"chat record has {expected} image parts in its messages but {len(record['images'] or [])} images"
        )


def _pixel_values(image_processor: Callable, images: list) -> torch.Tensor:
    # colour modes (grey, alpha, 16-bit) are the image processor's business, not the collator's
    return image_processor(images, return_tensors="pt")["pixel_values"]


def batch_attribute_labels(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> torch.LongTensor:
    """`[len(records), len(columns)]`: per column, the index of each record's value among the distinct values of
    the batch (values of any hashable type, e.g. strings; only equality matters to the attribute term)."""
    labels = []
    for column in columns:
        values = [record[column] for record in records]
        index = {value: position for position, value in enumerate(dict.fromkeys(values))}
        labels.append([index[value] for value in values])
    return torch.tensor(labels, dtype=torch.long).t()


class ImageTextCollator:
    """
    Batches image-caption records for tokenizer stage 1: `pixel_values`, and the caption's `input_ids` /
    `attention_mask` padded to `max_length` (BLIP-2 pads every caption to the same length).

    Args:
        image_processor: a [`SeedImageProcessor`] (anything called as `image_processor(images, return_tensors="pt")`).
        text_tokenizer: the Q-Former's text tokenizer (BERT's in BLIP-2).
        max_length: caption length in tokens (32 in BLIP-2 / SEED).
        attribute_columns: columns of known image attributes, batched as `attribute_labels` (see
            [`batch_attribute_labels`]) for the tokenizer's attribute term.
    """

    def __init__(
        self,
        image_processor: Callable,
        text_tokenizer: Callable,
        max_length: int = 32,
        attribute_columns: Sequence[str] = (),
    ):
        if max_length < 1:
            raise ValueError(f"max_length must be a positive number of tokens, got {max_length}")
        self.image_processor = image_processor
        self.text_tokenizer = text_tokenizer
        self.max_length = max_length
        self.attribute_columns = tuple(attribute_columns)

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        text = self.text_tokenizer(
            [record["text"] for record in records],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {
            "pixel_values": _pixel_values(self.image_processor, [record["image"] for record in records]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
        }
        if self.attribute_columns:
            batch["attribute_labels"] = batch_attribute_labels(records, self.attribute_columns)
        return batch


class ImageCollator:
    """
    Batches image records for tokenizer stage 2: `pixel_values`, plus `teacher_image_embeds` read from
    `teacher_embeds_column` when the teacher's embeddings were computed in advance, and `attribute_labels` (see
    [`batch_attribute_labels`]) when attribute columns are named.
    """

    def __init__(
        self,
        image_processor: Callable,
        teacher_embeds_column: str | None = None,
        attribute_columns: Sequence[str] = (),
    ):
        self.image_processor = image_processor
        self.teacher_embeds_column = teacher_embeds_column
        self.attribute_columns = tuple(attribute_columns)

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"pixel_values": _pixel_values(self.image_processor, [record["image"] for record in records])}
        if self.teacher_embeds_column is not None:
            batch["teacher_image_embeds"] = torch.tensor(
                [record[self.teacher_embeds_column] for record in records], dtype=torch.float32
            )
        if self.attribute_columns:
            batch["attribute_labels"] = batch_attribute_labels(records, self.attribute_columns)
        return batch


__all__ = [
    "ImageCollator",
    "ImageTextCollator",
    "batch_attribute_labels",
    "check_chat_record",
    "count_message_images",
    "interleaved_segments",
    "load_chat_dataset",
    "load_image_caption_dataset",
    "load_image_dataset",
    "load_interleaved_dataset",
    "load_source",
]
