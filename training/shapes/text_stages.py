"""`train-shapes` stage `data`: the world's training sets, a CLIP BPE tokenizer and the LLM's byte-level BPE tokenizer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import datasets

from . import records, sequences
from .recipe import ShapesDataArguments
from .run import CLIP_BOS, CLIP_EOS, DESCRIBE_QUESTION, ShapesRun


def train_clip_tokenizer(texts: Sequence[str], vocab_size: int, model_max_length: int):
    """
    A transformers `CLIPTokenizer` (CLIP's normalisation and pre-tokenization, byte-level BPE with `</w>` word
    ends) whose merges are learned on `texts`, `vocab_size` tokens at most.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    reference = CLIPTokenizer().backend_tokenizer
    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=CLIP_EOS))
    backend.normalizer = reference.normalizer
    backend.pre_tokenizer = reference.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[CLIP_BOS, CLIP_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    learned = json.loads(backend.to_str())["model"]
    merges = [
        tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in learned["merges"]
    ]
    # The trainer numbers the word-final characters (`a</w>`) in hash-map order, which changes from run to run;
    # number them in sorted order after the special tokens and the byte alphabet, and merges in their order, so
    # that the same texts always give the same ids.
    merged = list(dict.fromkeys("".join(merge) for merge in merges))
    num_fixed = 2 + len(pre_tokenizers.ByteLevel.alphabet())
    fixed = sorted(learned["vocab"], key=learned["vocab"].get)[:num_fixed]
    rest = sorted(set(learned["vocab"]) - set(fixed) - set(merged))
    vocab = {token: index for index, token in enumerate(dict.fromkeys([*fixed, *rest, *merged]))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def train_text_tokenizer(texts: Sequence[str], vocab_size: int):
    """
    A LLaMA-style text tokenizer learned on `texts`: byte-level BPE (`decode(encode(text)) == text`) with
    `<unk>`=0, `<s>`=1, `</s>`=2, `<s>` prepended, padding with `<unk>` on the left (for batched generation).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="left",
    )


def train_llm_tokenizer(texts: Sequence[str], vocab_size: int, num_image_codes: int):
    """
    A SEED-LLaMA tokenizer learned on `texts` ([`train_text_tokenizer`]), then the image tokens `<img_00000>` ...
    in the release's layout (codes, `<img>`, `</img>`) and the `<image>` placeholder.
    """
    tokenizer = train_text_tokenizer(texts, vocab_size)
    tokenizer.add_tokens([f"<img_{code:05d}>" for code in range(num_image_codes)])
    tokenizer.add_tokens(["<img>", "</img>"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def _text(text: str) -> dict[str, str | None]:
    return {"type": "text", "text": text}


_IMAGE = {"type": "image", "text": None}
_CHAT_FEATURES = datasets.Features(
    {
        "messages": datasets.List(
            {
                "role": datasets.Value("string"),
                "content": datasets.List(
                    {"type": datasets.Value("string"), "text": datasets.Value("string")}
                ),
            }
        ),
        "images": datasets.List(datasets.Image()),
    }
)


def _undecoded(dataset: datasets.Dataset, *columns: str) -> datasets.Dataset:
    """The dataset with its image columns as PNG bytes (no decoding and re-encoding when copied)."""
    for column in columns:
        feature = dataset.features[column]
        decoded_off = (
            datasets.List(datasets.Image(decode=False))
            if isinstance(feature, datasets.List)
            else datasets.Image(decode=False)
        )
        dataset = dataset.cast_column(column, decoded_off)
    return dataset


def build_chat_records(data_recipe: ShapesDataArguments, seed: int) -> datasets.Dataset:
    """
    Instruction-tuning records in the chat layout of `seed_hf.training.data`: captioning (the image-to-text
    pipeline's default question -> caption), generation (caption -> image), VQA (image + question -> answer),
    edits (image + instruction -> image) and the world's multi-turn dialogues.
    """
    messages, images = [], []
    captions = _undecoded(
        records.caption_dataset("train", data_recipe.caption_chat_samples, seed=seed + 1), "image"
    )
    for index, row in enumerate(captions):
        if index % 2:
            messages.append(
                [
                    {"role": "user", "content": [_IMAGE, _text(DESCRIBE_QUESTION)]},
                    {"role": "assistant", "content": [_text(row["text"])]},
                ]
            )
        else:
            messages.append(
                [
                    {"role": "user", "content": [_text(row["text"])]},
                    {"role": "assistant", "content": [_IMAGE]},
                ]
            )
        images.append([row["image"]])
    for row in _undecoded(records.vqa_dataset("train", data_recipe.vqa_samples, seed=seed), "image"):
        messages.append(
            [
                {"role": "user", "content": [_IMAGE, _text(row["question"])]},
                {"role": "assistant", "content": [_text(row["answer"])]},
            ]
        )
        images.append([row["image"]])
    for row in _undecoded(
        records.edit_dataset("train", data_recipe.edit_samples, seed=seed), "image", "target_image"
    ):
        messages.append(
            [
                {"role": "user", "content": [_IMAGE, _text(row["instruction"])]},
                {"role": "assistant", "content": [_IMAGE]},
            ]
        )
        images.append([row["image"], row["target_image"]])
    dialogues = _undecoded(
        records.dialogue_dataset("train", data_recipe.dialogue_samples, seed=seed), "images"
    )
    messages.extend(dialogues["messages"])
    images.extend(dialogues["images"])
    return datasets.Dataset.from_dict({"messages": messages, "images": images}, features=_CHAT_FEATURES)


def build_sequence_records(
    data_recipe: ShapesDataArguments, seed: int, chat: datasets.Dataset
) -> datasets.Dataset:
    """
    The records of the several-image stage (`llm_sequences`), in the layout of [`build_chat_records`]: questions
    about clips, compositions and in-context edits (`seed_hf.training.shapes.sequences`), then
    `sequence_replay_samples` records of the single-image instruction set `chat`, drawn at random, so that the
    stage keeps what instruction tuning taught.
    """
    messages, images = [], []
    for build, num_samples, chat_record, image_columns in (
        (sequences.clip_qa_dataset, data_recipe.clip_qa_samples, sequences.clip_qa_messages, ("frames",)),
        (
            sequences.composition_dataset,
            data_recipe.composition_samples,
            sequences.composition_messages,
            ("images", "target_image"),
        ),
        (
            sequences.in_context_edit_dataset,
            data_recipe.in_context_samples,
            sequences.in_context_messages,
            ("images", "target_image"),
        ),
    ):
        for row in _undecoded(build("train", num_samples, seed=seed), *image_columns):
            record = chat_record(row)
            messages.append(record["messages"])
            images.append(record["images"])
    if data_recipe.sequence_replay_samples > len(chat):
        raise ValueError(
            f"`data.sequence_replay_samples` ({data_recipe.sequence_replay_samples}) must not exceed the "
            f"instruction-tuning records ({len(chat)})"
        )
    replay = chat.shuffle(seed=seed).select(range(data_recipe.sequence_replay_samples))
    several_images = datasets.Dataset.from_dict(
        {"messages": messages, "images": images}, features=chat.features
    )
    return datasets.concatenate_datasets([several_images, replay])


def _chat_texts(records: datasets.Dataset) -> list[str]:
    return [
        part["text"]
        for row in records["messages"]
        for turn in row
        for part in turn["content"]
        if part["text"]
    ]


def run_data(run: ShapesRun, staging: Path) -> None:
    data = run.recipe.data
    seed = run.seed
    captions = records.caption_dataset("train", data.caption_samples, seed=seed)
    captions.save_to_disk(staging / "captions")
    # every seen combination once (or the first `image_samples`): the VAE, decoder and codebook data
    records.caption_dataset("train", data.image_samples, seed=seed).save_to_disk(staging / "images")
    chat = build_chat_records(data, seed)
    chat.save_to_disk(staging / "chat")
    sequence_records = build_sequence_records(data, seed, chat)
    if len(sequence_records):  # none: the several-image stage is skipped
        sequence_records.save_to_disk(staging / "sequence_chat")
    # the text tokenizers are learned before the several-image stage's texts, as a pretrained tokenizer would be
    texts = list(captions["text"]) + _chat_texts(chat)
    teacher_text = run.recipe.teacher.text_config
    train_clip_tokenizer(
        texts, data.clip_vocab_size, teacher_text["max_position_embeddings"]
    ).save_pretrained(staging / "clip_tokenizer")
    num_codes = run.recipe.tokenizer_stage1.config["num_codes"]
    train_llm_tokenizer(texts, data.llm_vocab_size, num_codes).save_pretrained(staging / "llm_tokenizer")
