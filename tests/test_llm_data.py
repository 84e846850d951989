"""SEED-LLaMA training data: control tokens typed in training chats stay text, and the sequences of a training set
are those of the sequence builder, built once with `datasets.Dataset.map`."""

import json

import datasets
from seed_llama_fixtures import build_tiny_processor

from seed_hf.modeling.processing_seed_llama import CHAT_TEMPLATES
from seed_hf.training.llm_data import SeedLlamaSequenceBuilder, build_training_dataset


def test_control_tokens_typed_in_a_training_chat_stay_text(tokenizer, layout):
    codes = list(range(32))
    messages = [
        {"role": "user", "content": "what do <img_00005>, <img></img> and </s> mean?"},
        {
            "role": "assistant",
            # two text parts that only join into a control token; then a real image
            "content": [
                {"type": "text", "text": "<img_000"},
                {"type": "text", "text": "07> is text"},
                {"type": "image"},
            ],
        },
    ]
    builder = SeedLlamaSequenceBuilder(tokenizer, layout, chat_template=CHAT_TEMPLATES["vicuna"])
    built = builder({"messages": messages, "image_codes": [codes]}, 0)

    # exactly the one real image's tokens, and the template's bos / eos
    image_ids = [layout.image_code_start_id + code for code in codes]
    control_ids = set(tokenizer.added_tokens_decoder) | {tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert [token for token in built["input_ids"] if token in control_ids] == [
        tokenizer.bos_token_id,
        layout.boi_token_id,
        *image_ids,
        layout.eoi_token_id,
        tokenizer.eos_token_id,
    ]
    # as inference renders the same conversation
    reference = [dict(message) for message in messages]
    reference[1] = dict(
        reference[1], content=[*messages[1]["content"][:2], {"type": "image", "codes": codes}]
    )
    rendered = build_tiny_processor(tokenizer).apply_chat_template(
        reference, chat_template="vicuna", tokenize=False
    )
    assert built["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def make_records():
    pairs = [{"text": f"a cat {index}", "image_codes": [index] * 32} for index in range(5)]
    chats = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"a dog {index}"}]},
            ],
            "image_codes": [[index] * 32],
        }
        for index in range(3)
    ]
    return pairs, chats


def test_training_dataset_holds_the_builder_sequences_of_every_source_in_order(tokenizer, layout, tmp_path):
    builder = SeedLlamaSequenceBuilder(tokenizer, layout, chat_template=CHAT_TEMPLATES["vicuna"])
    pairs, chats = make_records()
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in chats))
    # each record built on its own, indexed within its source (the index seeds a pair's order)
    expected = [builder(record, index) for index, record in enumerate(pairs)]
    expected += [builder(record, index) for index, record in enumerate(chats)]

    for num_proc in (None, 2):
        dataset = build_training_dataset(
            [datasets.Dataset.from_list(pairs), str(path)], builder, num_proc=num_proc
        )
        assert dataset.column_names == ["input_ids", "labels"]
        assert dataset.to_list() == expected
    # the sequences of a source read from files are cached: building them again reads the same cache file
    first = build_training_dataset(str(path), builder)
    again = build_training_dataset(str(path), builder)
    assert first.cache_files and again.cache_files == first.cache_files
    # another builder setting is another cache entry
    shorter = SeedLlamaSequenceBuilder(
        tokenizer, layout, max_length=8, chat_template=CHAT_TEMPLATES["vicuna"]
    )
    other = build_training_dataset(str(path), shorter)
    assert other.cache_files != first.cache_files and max(map(len, other["input_ids"])) <= 8
