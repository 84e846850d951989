"""Offline image tokenization: images of a dataset -> SEED codes, written as Parquet shards.

SEED-LLaMA trains on code ids, never on pixels, so the images of a training set are turned into codes
once, in advance. `tokenize_images` reads a dataset (any source of `seed_hf.training.data.load_source`),
runs [`SeedImageProcessor`] and `SeedTokenizerModel.encode` in batches and writes the dataset without its
image column plus a codes column (`list[int]` of 32 codes per image; a list of such lists when the image
column holds lists of images, as in interleaved documents or chat records; `None` images give `None`).

- **Resumable**: rows are written in chunks of `rows_per_file`, each chunk to its own Parquet file,
  atomically (a temporary file renamed into place); a re-run skips the chunks already on disk.
- **Shardable**: process `shard_index` of `num_shards` handles a contiguous slice of the rows, so that
  the files of all processes, sorted by name, are the dataset in its original order. By default the shards are
  the processes of `torchrun` / `accelerate launch` (accelerate's `PartialState`).

Each file's rows are encoded by `datasets.Dataset.map(batched=True)` and written by `Dataset.to_parquet`.

Command line: `seed-hf tokenize-images --model TOKENIZER --data SOURCE --output-dir DIR [...]`.
"""

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from accelerate import PartialState

from seed_hf.io_utils import write_file_atomically, write_text_atomically

from .data import load_source

_SETTINGS_FILE = "tokenize_images.json"
# settings that fix which rows land in which file, and which codes they get: a resumed run must use the same
_LAYOUT_KEYS = (
    "num_rows",
    "num_shards",
    "rows_per_file",
    "image_column",
    "codes_column",
    "model_fingerprint",
    "image_processor",
)


def model_fingerprint(model) -> str:
    """A SHA-256 of a model's config, dtype and weights: two models with the same fingerprint give the same codes."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    digest.update(str(model.dtype).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _chunk_path(output_dir: Path, shard_index: int, num_shards: int, chunk_index: int) -> Path:
    return output_dir / f"codes-{shard_index:05d}-of-{num_shards:05d}-{chunk_index:06d}.parquet"


def _image_feature_is_list(feature) -> bool:
    if isinstance(feature, datasets.Image):
        return False
    if isinstance(feature, (datasets.List, datasets.LargeList, datasets.Sequence)) and isinstance(
        feature.feature, datasets.Image
    ):
        return True
    raise TypeError(
        f"the image column must hold images or lists of images (datasets.Image features), got {feature}"
    )


def _check_layout(output_dir: Path, settings: dict) -> None:
    """Record the run's layout on first use; refuse to resume a run made with another layout."""
    path = output_dir / _SETTINGS_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        changed = [key for key in _LAYOUT_KEYS if previous.get(key) != settings[key]]
        if changed:
            # the tokenizer's path says which model it was; its fingerprint, that its codes would differ
            if "model_fingerprint" in changed:
                changed.append("model")
            raise ValueError(
                f"output_dir {str(output_dir)!r} holds a run made with different settings "
                f"({', '.join(f'{key}: {previous.get(key)!r} -> {settings[key]!r}' for key in changed)}); "
                "use a new output_dir or the same settings (codes of two tokenizers must not be mixed)"
            )
        return
    write_text_atomically(path, json.dumps(settings, indent=2))


@torch.inference_mode()
def _encode(model, image_processor, images: list, batch_size: int) -> list[list[int]]:
    codes = []
    for start in range(0, len(images), batch_size):
        pixel_values = image_processor(images[start : start + batch_size], return_tensors="pt")[
            "pixel_values"
        ]
        pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)
        codes.extend(model.encode(pixel_values).cpu().tolist())
    return codes


def _codes_for_rows(model, image_processor, column: list, is_list: bool, batch_size: int) -> list:
    """Codes for one image column slice, keeping its structure (image or list of images, `None` kept)."""
    if not is_list:
        present = [image for image in column if image is not None]
        found = iter(_encode(model, image_processor, present, batch_size)) if present else iter(())
        return [None if image is None else next(found) for image in column]
    flat = [image for row in column for image in (row or []) if image is not None]
    found = iter(_encode(model, image_processor, flat, batch_size)) if flat else iter(())
    return [
        None if row is None else [None if image is None else next(found) for image in row] for row in column
    ]


def tokenize_images(
    source,
    model,
    image_processor,
    output_dir: str | os.PathLike,
    *,
    image_column: str = "image",
    codes_column: str = "image_codes",
    batch_size: int = 64,
    rows_per_file: int = 10_000,
    num_shards: int | None = None,
    shard_index: int | None = None,
    split: str = "train",
    show_progress: bool = True,
) -> list[Path]:
    """
    Turn the images of `source` into SEED codes and write them as Parquet files in `output_dir`.

    Args:
        source: a dataset or anything [`load_source`] opens.
        model: a `SeedTokenizerModel` (put it on the device and dtype to run on; it is set to eval mode).
        image_processor: its [`SeedImageProcessor`].
        output_dir: folder of the Parquet files (and of `tokenize_images.json`, the run's settings).
        image_column: column holding an image, or a list of images (may contain `None`), per row.
        codes_column: name of the codes column written in place of the image column.
        batch_size: images per forward pass.
        rows_per_file: rows per Parquet file, the unit of resumption.
        num_shards, shard_index: this process handles shard `shard_index` of `num_shards` contiguous
            shards; default: this process among those of the launch (`PartialState`), else a single shard.
        split: split of `source` to read.
        show_progress: show `datasets`' progress bar over the rows of each file written.

    Returns:
        The paths of this shard's files, in row order (written now or found from an earlier run).
    """
    if num_shards is None and shard_index is None:
        # `PartialState.split_between_processes` slices rows as `Dataset.shard(contiguous=True)` does below, but
        # only among the launched processes: explicit shards also serve independent jobs
        # only when told that the processes run on CPU does accelerate look for CPU process groups
        state = PartialState(cpu=model.device.type == "cpu")
        num_shards, shard_index = state.num_processes, state.process_index
    elif num_shards is None or shard_index is None:
        raise ValueError("num_shards and shard_index must be given together")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"shard_index must lie in [0, num_shards) with num_shards >= 1, got {shard_index} of {num_shards}"
        )
    for name, value in (("batch_size", batch_size), ("rows_per_file", rows_per_file)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    dataset = load_source(source, split=split)
    if len(dataset) == 0:
        raise ValueError("source has no rows")
    if image_column not in dataset.column_names:
        raise ValueError(f"dataset has no column {image_column!r}; its columns are {dataset.column_names}")
    if codes_column in dataset.column_names and codes_column != image_column:
        raise ValueError(f"dataset already has a column {codes_column!r}; pass another codes_column")
    is_list = _image_feature_is_list(dataset.features[image_column])

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(model)
    _check_layout(
        output_dir,
        {
            "num_rows": len(dataset),
            "num_shards": num_shards,
            "rows_per_file": rows_per_file,
            "image_column": image_column,
            "codes_column": codes_column,
            "model": getattr(model.config, "_name_or_path", None) or None,
            "model_fingerprint": fingerprint,
            "image_processor": json.loads(image_processor.to_json_string()),
        },
    )
    shard = dataset.shard(num_shards, shard_index, contiguous=True)
    features = shard.features.copy()
    del features[image_column]
    codes_feature = datasets.List(datasets.Value("int32"))
    features[codes_column] = datasets.List(codes_feature) if is_list else codes_feature

    def encode_rows(rows):
        return {
            codes_column: _codes_for_rows(model, image_processor, rows[image_column], is_list, batch_size)
        }

    model.eval()
    paths = []
    starts = range(0, len(shard), rows_per_file)
    quiet = not show_progress and datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        for chunk_index, start in enumerate(starts):
            path = _chunk_path(output_dir, shard_index, num_shards, chunk_index)
            paths.append(path)
            if path.exists():
                continue
            written = shard.select(range(start, min(start + rows_per_file, len(shard)))).map(
                encode_rows,
                batched=True,
                batch_size=batch_size,
                remove_columns=image_column,
                features=features,
                # the rows go to Parquet at once: no cache file, and no hashing of the model for its name
                keep_in_memory=True,
                new_fingerprint=f"{fingerprint[:16]}-{shard_index}-{chunk_index}",
                desc=f"shard {shard_index}: file {chunk_index + 1} of {len(starts)}",
            )
            # the Parquet schema carries the `datasets` features
            write_file_atomically(path, written.to_parquet)
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return paths


def load_tokenized_images(output_dir: str | os.PathLike) -> datasets.Dataset:
    """The dataset written by [`tokenize_images`] (all shards, in the source's row order)."""
    output_dir = Path(output_dir)
    settings_path = output_dir / _SETTINGS_FILE
    if not settings_path.exists():
        raise ValueError(f"{str(output_dir)!r} holds no tokenize_images output (no {_SETTINGS_FILE})")
    settings = json.loads(settings_path.read_text())
    files = [str(path) for path in sorted(output_dir.glob("codes-*.parquet"))]
    dataset = datasets.Dataset.from_parquet(files) if files else None
    rows = 0 if dataset is None else len(dataset)
    if rows != settings["num_rows"]:
        raise ValueError(
            f"{str(output_dir)!r} is incomplete: {rows} of {settings['num_rows']} rows are written; "
            "run the remaining shards first"
        )
    return dataset


def image_processor_for(model_path: str | os.PathLike, config):
    """The model folder's saved image processor, else a [`SeedImageProcessor`] matching `config`."""
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor

    if os.path.isdir(model_path) and os.path.exists(os.path.join(model_path, "preprocessor_config.json")):
        return SeedImageProcessor.from_pretrained(model_path)
    return SeedImageProcessor(
        size={"height": config.image_size, "width": config.image_size},
        image_mean=config.image_mean,
        image_std=config.image_std,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf tokenize-images`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf tokenize-images", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="SeedTokenizerModel folder or Hub id")
    parser.add_argument(
        "--data", required=True, help="dataset source: saved dataset, image folder, files, Hub name"
    )
    parser.add_argument("--output-dir", required=True, help="where the Parquet shards of codes are written")
    parser.add_argument("--split", default="train", help="dataset split to tokenize")
    parser.add_argument("--image-column", default="image", help="column holding the images")
    parser.add_argument("--codes-column", default="image_codes", help="column the codes are written to")
    parser.add_argument("--batch-size", type=int, default=64, help="images encoded per forward pass")
    parser.add_argument("--rows-per-file", type=int, default=10_000, help="rows per Parquet file")
    parser.add_argument(
        "--num-shards", type=int, default=None, help="default: the launched processes, else 1"
    )
    parser.add_argument("--shard-index", type=int, default=None, help="default: this process's rank, else 0")
    parser.add_argument(
        "--device",
        default=None,
        help="torch device (default: cuda, this process's GPU under a launcher, if available, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the tokenizer",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    # under `torchrun` / `accelerate launch`, the process's rank, shard and device (its process group is closed below)
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = state.device if args.device in (None, "cuda") else args.device
    model = SeedTokenizerModel.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(device)
    image_processor = image_processor_for(args.model, model.config)
    paths = tokenize_images(
        args.data,
        model,
        image_processor,
        args.output_dir,
        image_column=args.image_column,
        codes_column=args.codes_column,
        batch_size=args.batch_size,
        rows_per_file=args.rows_per_file,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        split=args.split,
        show_progress=not args.no_progress,
    )
    print(f"wrote {len(paths)} file(s) to {args.output_dir}")
    state.destroy_process_group()
    return 0


__all__ = ["image_processor_for", "load_tokenized_images", "tokenize_images"]
