"""Training data sources, collators and the offline image tokenization (resumable, sharded)."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
from seed_hf.modeling.image_processing_seed import SeedImageProcessor
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
from seed_hf.training.data import (
    ImageCollator,
    ImageTextCollator,
    check_chat_record,
    interleaved_segments,
    load_image_caption_dataset,
    load_source,
)
from seed_hf.training.tokenize_images import load_tokenized_images, tokenize_images

IMAGE_SIZE = 28


def tiny_tokenizer() -> SeedTokenizerModel:
    torch.manual_seed(0)
    # large init ranges so that a random tiny tower gives different images different codes
    config = SeedTokenizerConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=14,
            initializer_range=0.5,
        ),
        qformer_config=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            initializer_range=0.5,
        ),
        decoder_config=dict(num_hidden_layers=1, num_attention_heads=2),
        generation_head_widths=[16, 8],
        num_codes=64,
        code_dim=8,
        generation_embedding_dim=16,
    )
    return SeedTokenizerModel(config).eval()


def processor() -> SeedImageProcessor:
    return SeedImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)) for i in range(count)]


def reference_codes(model, images) -> list[list[int]]:
    """One image at a time, straight through the model: the independent reference."""
    with torch.no_grad():
        return [
            model.encode(processor()(image, return_tensors="pt")["pixel_values"])[0].tolist()
            for image in images
        ]


class CountingEncoder(torch.nn.Module):
    """Wraps a tokenizer; counts `encode` calls and can raise after a number of them (an interrupted run)."""

    def __init__(self, model, fail_after: int | None = None):
        super().__init__()
        self.model, self.fail_after, self.calls = model, fail_after, 0
        self.config = model.config

    @property
    def device(self):
        return self.model.device

    @property
    def dtype(self):
        return self.model.dtype

    def encode(self, pixel_values):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.model.encode(pixel_values)


@pytest.fixture(scope="module")
def model():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def caption_dataset():
    images = random_images(10)
    return datasets.Dataset.from_dict(
        {"image": images, "text": [f"caption {i}" for i in range(10)]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )


def test_the_tiny_tokenizer_tells_the_test_images_apart(model, caption_dataset):
    # otherwise the order checks below would prove nothing
    codes = reference_codes(model, caption_dataset["image"])
    assert len({tuple(row) for row in codes}) == len(codes)


def test_tokenize_images_writes_the_codes_of_each_row_in_order(model, caption_dataset, tmp_path):
    paths = tokenize_images(
        caption_dataset, model, processor(), tmp_path, rows_per_file=4, batch_size=3, show_progress=False
    )
    assert [path.name for path in paths] == [f"codes-00000-of-00001-{i:06d}.parquet" for i in range(3)]
    written = load_tokenized_images(tmp_path)
    assert written.column_names == ["text", "image_codes"]
    assert written["text"] == caption_dataset["text"]
    assert written["image_codes"] == reference_codes(model, caption_dataset["image"])


def test_an_interrupted_run_resumes_from_its_completed_files(model, caption_dataset, tmp_path):
    interrupted = CountingEncoder(model, fail_after=3)  # batch 2, 4 rows per file: dies inside file 2
    with pytest.raises(KeyboardInterrupt):
        tokenize_images(
            caption_dataset,
            interrupted,
            processor(),
            tmp_path,
            rows_per_file=4,
            batch_size=2,
            show_progress=False,
        )
    assert sorted(path.name for path in tmp_path.glob("*.parquet")) == ["codes-00000-of-00001-000000.parquet"]
    assert not list(tmp_path.glob(".*"))  # no half-written file left behind
    with pytest.raises(ValueError, match="incomplete: 4 of 10 rows"):
        load_tokenized_images(tmp_path)

    resumed = CountingEncoder(model)
    tokenize_images(
        caption_dataset, resumed, processor(), tmp_path, rows_per_file=4, batch_size=2, show_progress=False
    )
    assert resumed.calls == 3  # rows 4..9 only, in batches of 2
    assert load_tokenized_images(tmp_path)["image_codes"] == reference_codes(model, caption_dataset["image"])


def test_resuming_with_another_file_layout_is_refused(model, caption_dataset, tmp_path):
    tokenize_images(caption_dataset, model, processor(), tmp_path, rows_per_file=4, show_progress=False)
    with pytest.raises(ValueError, match=r"different settings \(rows_per_file: 4 -> 5\)"):
        tokenize_images(caption_dataset, model, processor(), tmp_path, rows_per_file=5, show_progress=False)


def test_shards_from_the_command_line_add_up_to_the_whole_dataset(model, caption_dataset, tmp_path):
    from seed_hf.cli import main

    model.save_pretrained(tmp_path / "tokenizer")
    processor().save_pretrained(tmp_path / "tokenizer")
    caption_dataset.save_to_disk(tmp_path / "data")
    for shard_index in (1, 0, 2):  # any order, as independent processes would finish
        arguments = [
            "tokenize-images",
            "--model",
            str(tmp_path / "tokenizer"),
            "--data",
            str(tmp_path / "data"),
        ]
        arguments += [
            "--output-dir",
            str(tmp_path / "codes"),
            "--num-shards",
            "3",
            "--shard-index",
            str(shard_index),
        ]
        assert main([*arguments, "--rows-per-file", "2", "--batch-size", "4", "--no-progress"]) == 0
        if shard_index == 1:
            with pytest.raises(ValueError, match="incomplete"):
                load_tokenized_images(tmp_path / "codes")
    written = load_tokenized_images(tmp_path / "codes")
    assert written["text"] == caption_dataset["text"]
    assert written["image_codes"] == reference_codes(model, caption_dataset["image"])
    assert json.loads((tmp_path / "codes" / "tokenize_images.json").read_text())["num_shards"] == 3


def test_list_image_columns_keep_their_structure(model, tmp_path):
    images = random_images(3, seed=1)
    documents = datasets.Dataset.from_dict(
        {
            "images": [[images[0], None, images[1]], [None], [images[2]]],
            "texts": [[None, "a", None], ["b"], [None]],
        },
        features=datasets.Features(
            {"images": datasets.List(datasets.Image()), "texts": datasets.List(datasets.Value("string"))}
        ),
    )
    tokenize_images(documents, model, processor(), tmp_path, image_column="images", show_progress=False)
    expected = reference_codes(model, images)
    assert load_tokenized_images(tmp_path)["image_codes"] == [
        [expected[0], None, expected[1]],
        [None],
        [expected[2]],
    ]


def test_tokenize_images_rejects_bad_arguments(model, caption_dataset, tmp_path):
    with pytest.raises(
        ValueError, match=r"dataset has no column 'picture'; its columns are \['image', 'text'\]"
    ):
        tokenize_images(caption_dataset, model, processor(), tmp_path, image_column="picture")
    with pytest.raises(ValueError, match=r"shard_index must lie in \[0, num_shards\)"):
        tokenize_images(caption_dataset, model, processor(), tmp_path, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match="num_shards and shard_index must be given together"):
        tokenize_images(caption_dataset, model, processor(), tmp_path, num_shards=2)
    with pytest.raises(TypeError, match="the image column must hold images or lists of images"):
        tokenize_images(caption_dataset, model, processor(), tmp_path, image_column="text")


def test_an_image_folder_with_metadata_loads_as_image_caption_pairs(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for index, image in enumerate(random_images(3)):
        image.save(folder / f"{index}.png")
    lines = [json.dumps({"file_name": f"{i}.png", "caption": f"picture {i}"}) for i in range(3)]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    dataset = load_image_caption_dataset(
        str(folder), text_column="caption", cache_dir=str(tmp_path / "cache")
    )
    assert sorted(dataset.column_names) == ["image", "text"]
    assert sorted(dataset["text"]) == ["picture 0", "picture 1", "picture 2"]
    assert isinstance(dataset[0]["image"], Image.Image)
    with pytest.raises(ValueError, match="image-caption dataset has no column 'text'"):
        load_image_caption_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="neither a saved dataset"):
        load_source(str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="source '/no/such/folder' does not exist"):
        load_source("/no/such/folder")


def test_parquet_files_are_a_source(model, caption_dataset, tmp_path):
    tokenize_images(caption_dataset, model, processor(), tmp_path, rows_per_file=4, show_progress=False)
    dataset = load_source(str(tmp_path / "codes-*.parquet"), cache_dir=str(tmp_path / "cache"))
    assert dataset["text"] == caption_dataset["text"]


def test_interleaved_and_chat_records_are_checked():
    assert interleaved_segments({"images": ["I", None], "texts": [None, "t"]}) == [
        ("image", "I"),
        ("text", "t"),
    ]
    with pytest.raises(ValueError, match="position 1 must hold exactly one of an image or a text"):
        interleaved_segments({"images": ["I", "J"], "texts": [None, "t"]})
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        interleaved_segments({"images": ["I", None], "texts": [None]})
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": "a cat"},
    ]
    check_chat_record({"messages": messages, "images": ["I"]})
    with pytest.raises(ValueError, match="1 image parts in its messages but 2 images"):
        check_chat_record({"messages": messages, "images": ["I", "J"]})


def test_collators_build_model_inputs(caption_dataset):
    from transformers import BertTokenizer

    words = "[PAD] [UNK] [CLS] [SEP] [MASK] caption 0 1 2".split()
    text_tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(words)})
    records = [caption_dataset[i] for i in range(3)]
    batch = ImageTextCollator(processor(), text_tokenizer, max_length=6)(records)
    torch.testing.assert_close(
        batch["pixel_values"], processor()([r["image"] for r in records], return_tensors="pt")["pixel_values"]
    )
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3, 0, 0], [2, 5, 7, 3, 0, 0], [2, 5, 8, 3, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [4, 4, 4]

    with_teacher = [{**record, "clip": [float(i)] * 4} for i, record in enumerate(records)]
    batch = ImageCollator(processor(), teacher_embeds_column="clip")(with_teacher)
    assert batch["pixel_values"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["teacher_image_embeds"].tolist() == [[0.0] * 4, [1.0] * 4, [2.0] * 4]
