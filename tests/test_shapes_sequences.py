"""SEED-Shapes records of several images: clip QA, compositions, in-context edits, their chat layouts."""

import hashlib
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoProcessor

import seed_hf  # noqa: F401  (registers the Auto classes)
from seed_hf.training import shapes
from seed_hf.training.data import check_chat_record
from seed_hf.training.shapes import (
    CLIP_QUESTIONS,
    COMPOSITION_INSTRUCTIONS,
    IN_CONTEXT_PROMPTS,
    ShapeAttributes,
    clip_qa_dataset,
    clip_qa_messages,
    composition_dataset,
    composition_messages,
    in_context_edit_dataset,
    in_context_messages,
    make_composition_instruction,
    parse_caption,
    parse_clip_answer,
    render_array,
)
from seed_hf.training.shapes.reader import read_attributes

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
NAMES = ("background", "shape", "size", "color", "x", "y")
# the grid's order along each axis, as the issue states it (left to right, top to bottom)
AXES = {"x": ("left", "center", "right"), "y": ("top", "middle", "bottom")}
# composition kind -> the attributes the target takes from the donor (the rules)
BORROWED = {"color": ("color",), "background": ("background",), "position": ("x", "y"), "shape": ("shape",)}
BUILDERS = {
    "clip_qa_dataset": clip_qa_dataset,
    "composition_dataset": composition_dataset,
    "in_context_edit_dataset": in_context_edit_dataset,
}


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _attributes(index: int) -> dict[str, str]:
    return ShapeAttributes.from_index(index).to_dict()


def _differences(first: dict, second: dict) -> list[str]:
    return [name for name in NAMES if first[name] != second[name]]


def _row_images(name: str, row: dict) -> list:
    """Every image of a row, the split's last."""
    if name == "clip_qa_dataset":
        return row["frames"]
    return [*row["images"], row["target_image"]]


def _row_combinations(name: str, row: dict) -> list[int]:
    """The combination of every image of a row, the split's last."""
    if name == "clip_qa_dataset":
        return row["frame_combinations"]
    return [*row["image_combinations"], row["target_combination"]]


def _image_columns(name: str) -> list[str]:
    return ["frames"] if name == "clip_qa_dataset" else ["images", "target_image"]


def _record_key(name: str, row: dict) -> tuple:
    text = {"clip_qa_dataset": "question", "composition_dataset": "instruction"}.get(name, "prompt")
    return tuple(_row_combinations(name, row)), row[text]


def _digest(dataset) -> str:
    rows = dataset.with_format("arrow")[:].to_pylist()
    return hashlib.sha256(
        json.dumps(rows, sort_keys=True, default=lambda value: value.hex()).encode()
    ).hexdigest()


# ------------------------------------------------------------------------------------------------ clips


def _expected_answer(question_type: str, readings: list[dict]) -> str:
    """The answer of a question, from the attributes read off the frames' pixels."""
    first, last = readings[0], readings[-1]
    (changed,) = _differences(first, last)
    if question_type == "change":
        return "position" if changed in ("x", "y") else changed
    if question_type == "direction":
        step = AXES[changed].index(last[changed]) - AXES[changed].index(first[changed])
        return {("x", 1): "right", ("x", -1): "left", ("y", 1): "down", ("y", -1): "up"}[
            changed, np.sign(step)
        ]
    if question_type == "size_change":
        return {"large": "grow", "small": "shrink"}[last["size"]]
    if question_type == "shape":
        return last["shape"]
    when, attribute = question_type.split("_")
    reading = first if when == "start" else last
    return reading[attribute]


@pytest.mark.parametrize("num_frames, split", [(3, "train"), (2, "train"), (3, "test_unseen")])
def test_clip_answers_are_the_truth_of_the_frames_pixels(num_frames, split):
    dataset = clip_qa_dataset(split, 120 if split == "train" else None, seed=1, num_frames=num_frames)
    assert set(dataset["changed_attribute"]) == {"position", "color", "size", "background"}
    if split == "train":
        assert set(dataset["question_type"]) == set(CLIP_QUESTIONS)
    for row in dataset:
        assert len(row["frames"]) == len(row["frame_combinations"]) == num_frames
        for frame, index in zip(row["frames"], row["frame_combinations"], strict=True):
            np.testing.assert_array_equal(_pixels(frame), render_array(index))
        readings = [read_attributes(frame) for frame in row["frames"]]
        assert all(reading["valid"] for reading in readings)
        assert {name: readings[-1][name] for name in (*NAMES, "position")} == {
            name: row[name] for name in (*NAMES, "position")
        }
        changing = [name for name in NAMES if len({reading[name] for reading in readings}) > 1]
        assert len(changing) == 1, row["frame_combinations"]  # exactly one attribute changes
        (changed,) = changing
        assert row["changed_attribute"] == ("position" if changed in ("x", "y") else changed)
        values = [reading[changed] for reading in readings]
        if changed in ("x", "y"):  # one cell a frame, in a straight line
            steps = {b - a for a, b in itertools.pairwise(AXES[changed].index(value) for value in values)}
            assert steps in ({1}, {-1})
        elif changed == "size":  # changes once, at the last frame
            assert len(set(values[:-1])) == 1 and values[-1] != values[0]
        else:  # another value every frame
            assert len(set(values)) == num_frames
        assert row["answer"] == _expected_answer(row["question_type"], readings), row["question"]
        assert parse_clip_answer(row["question_type"], row["answer"]) == row["answer"]
        # the question does not give the answer away
        assert parse_clip_answer(row["question_type"], row["question"]) is None, row["question"]


@pytest.mark.parametrize(
    "question_type, text, expected",
    [
        ("direction", "It moves to the right.", "right"),
        ("direction", "upwards, towards the top", "up"),
        ("direction", "left or right", None),
        ("size_change", "It gets bigger", "grow"),
        ("size_change", "The triangle shrinks.", "shrink"),
        ("change", "The background colour changes.", "background"),
        ("change", "its colour", "color"),
        ("change", "the circle moves", "position"),
        ("change", "it grows", "size"),
        ("end_position", "In the upper left corner", "top left"),
        ("start_position", "on the right", "middle right"),
        ("start_position", "the very centre", "center"),
        ("end_position", "somewhere", None),
        ("end_color", "violet", "purple"),
        ("start_color", "red, then blue", None),
        ("end_background", "a grey backdrop", "gray"),
        ("shape", "a disk", "circle"),
        # an answer that reasons first is read in its last sentence only
        (
            "direction",
            "First -> last frame: background white -> white, shape circle -> circle, size small -> small, "
            "colour red -> red, column left -> right (changed), row top -> top. Answer: right.",
            "right",
        ),
        ("change", "The backdrop is white. Answer: color.", "color"),
        ("end_color", "It ends red. I am not sure!", None),
    ],
)
def test_parse_clip_answer_reads_free_text(question_type, text, expected):
    assert parse_clip_answer(question_type, text) == expected


# ------------------------------------------------------------------------------------------------ compositions


@pytest.mark.parametrize("split", ["train", "test_unseen"])
def test_composition_targets_follow_the_attribute_rule(split):
    dataset = composition_dataset(split, None, seed=2)
    assert set(dataset["composition"]) == set(BORROWED) and set(dataset["base_image"]) == {0, 1}
    for row in dataset:
        images, indices = (
            _row_images("composition_dataset", row),
            _row_combinations("composition_dataset", row),
        )
        for image, index in zip(images, indices, strict=True):
            np.testing.assert_array_equal(_pixels(image), render_array(index))
        base, donor = (_attributes(index) for index in np.roll(indices[:2], -row["base_image"]))
        target = {name: row[f"target_{name}"] for name in NAMES}
        borrowed = BORROWED[row["composition"]]
        assert target == base | {name: donor[name] for name in borrowed}
        assert [base[name] for name in borrowed] != [donor[name] for name in borrowed]  # not trivial
        assert donor != target
        assert row["target_combination"] == ShapeAttributes(**target).index
        assert row["target_position"] == ShapeAttributes(**target).position


def test_composition_instructions_name_the_base_and_the_donor():
    rng = np.random.default_rng(0)
    swap = str.maketrans({"1": "2", "2": "1"})
    for kind, templates in COMPOSITION_INSTRUCTIONS.items():
        for _ in range(10 * len(templates)):
            state = rng.bit_generator.state
            first_base = make_composition_instruction(kind, 0, rng)
            rng.bit_generator.state = state
            second_base = make_composition_instruction(kind, 1, rng)
            # the same sentence with the two images' names exchanged
            exchanged = first_base.replace("first", "\0").replace("second", "first").replace("\0", "second")
            assert exchanged.translate(swap) == second_base
            assert ("first" in first_base and "second" in first_base) or (
                "1" in first_base and "2" in first_base
            )
            assert parse_caption(first_base) == dict.fromkeys(NAMES)  # names no value: the images give them


# ------------------------------------------------------------------------------------------------ in-context edits


def _in_context_pairs(images: list[dict]) -> list[tuple[dict, dict]]:
    """(source, result) of each example, then (query, target), from the attributes of a row's images."""
    return [(images[k], images[k + 1]) for k in range(0, len(images) - 1, 2)]


@pytest.mark.parametrize("num_examples, split", [(2, "train"), (1, "test_unseen")])
def test_in_context_edits_are_the_truth_of_the_pixels(num_examples, split):
    dataset = in_context_edit_dataset(split, 40, seed=3, num_examples=num_examples)
    for row in dataset:
        images = _row_images("in_context_edit_dataset", row)
        for image, index in zip(images, _row_combinations("in_context_edit_dataset", row), strict=True):
            np.testing.assert_array_equal(_pixels(image), render_array(index))
        pairs = _in_context_pairs([read_attributes(image) for image in images])
        assert len(pairs) == num_examples + 1
        for source, result in pairs:  # every example and the query get the same one-attribute edit
            assert _differences(source, result) == [row["edited_attribute"]]
            assert result[row["edited_attribute"]] == row["edit_value"]
        assert {name: pairs[-1][1][name] for name in NAMES} == {name: row[f"target_{name}"] for name in NAMES}


@pytest.mark.parametrize("num_examples, split", [(3, "train"), (2, "test_unseen")])
def test_in_context_examples_show_the_edit_without_the_answer(num_examples, split):
    dataset = in_context_edit_dataset(split, None, seed=4, num_examples=num_examples)
    if split == "train":
        assert set(dataset["edited_attribute"]) == set(NAMES)
    for row in dataset.remove_columns(["images", "target_image"]):
        assert row["prompt"] in IN_CONTEXT_PROMPTS
        indices = _row_combinations("in_context_edit_dataset", row)
        assert len(indices) == 2 * num_examples + 2
        pairs = _in_context_pairs([_attributes(index) for index in indices])
        attribute, value = row["edited_attribute"], row["edit_value"]
        for source, result in pairs:
            assert _differences(source, result) == [attribute] and result[attribute] == value
        (query, target), examples = pairs[-1], pairs[:-1]
        assert all(source != query for source, _ in examples)
        assert all(result != target for _, result in examples)  # the answer is not shown
        assert len({indices[k] for k in range(0, 2 * num_examples, 2)}) == num_examples  # distinct sources
        # the sources spread over the other values (a move to a column is told from a shift by one cell)
        others = len(shapes.ATTRIBUTE_VALUES[attribute]) - 1
        assert len({source[attribute] for source, _ in examples}) == min(num_examples, others)


def test_in_context_prompts_do_not_name_an_edit():
    for prompt in IN_CONTEXT_PROMPTS:
        assert parse_caption(prompt) == dict.fromkeys(NAMES), prompt


# ------------------------------------------------------------------------------------------------ splits


@pytest.mark.parametrize("name", BUILDERS)
def test_splits_keep_unseen_combinations_out_and_test_seen_records_out_of_train(name):
    builder = BUILDERS[name]
    seen, unseen = set(shapes.seen_combinations()), set(shapes.unseen_combinations())
    train, test_seen, test_unseen = (
        builder(split, num_samples, seed=5).remove_columns(_image_columns(name))
        for split, num_samples in (("train", 900), ("test_seen", 300), ("test_unseen", None))
    )
    for dataset in (train, test_seen):
        assert all(set(_row_combinations(name, row)) <= seen for row in dataset)
    train_keys = {_record_key(name, row) for row in train}
    assert train_keys.isdisjoint(_record_key(name, row) for row in test_seen)
    indices = [_row_combinations(name, row) for row in test_unseen]
    assert len(indices) == len(unseen)
    assert {last for *_, last in indices} == unseen  # each unseen combination once, as the last image
    assert all(set(earlier) <= seen for *earlier, _ in indices)


def test_short_clips_test_seen_records_never_occur_in_train():
    # two-frame clips have the fewest records per combination: without the bucket rule, these sizes share records
    train = clip_qa_dataset("train", 875 * 4, seed=0, num_frames=2).remove_columns("frames")
    test_seen = clip_qa_dataset("test_seen", None, seed=0, num_frames=2).remove_columns("frames")
    keys = {(tuple(row["frame_combinations"]), row["question"]) for row in train}
    assert keys.isdisjoint((tuple(row["frame_combinations"]), row["question"]) for row in test_seen)


# ------------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", BUILDERS)
def test_shorter_datasets_are_prefixes_and_the_seed_matters(name):
    builder = BUILDERS[name]
    long, short = builder("train", 30, seed=1), builder("train", 12, seed=1)
    assert _digest(long.select(range(12))) == _digest(short)
    assert _digest(builder("train", 12, seed=2)) != _digest(short)
    test_seen = builder("test_seen", 20, seed=1)
    assert _digest(test_seen.select(range(8))) == _digest(builder("test_seen", 8, seed=1))


def test_same_seed_gives_identical_datasets_in_a_fresh_process():
    here = {name: _digest(builder("train", 20, seed=7)) for name, builder in BUILDERS.items()}
    # a fresh interpreter has another PYTHONHASHSEED: nothing may depend on hash() or set order
    code = (
        "import hashlib, json; from seed_hf.training import shapes\n"
        "def digest(d):\n"
        "    rows = d.with_format('arrow')[:].to_pylist()\n"
        "    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=lambda v: v.hex()).encode()).hexdigest()\n"
        f"print(json.dumps({{n: digest(getattr(shapes, n)('train', 20, seed=7)) for n in {list(BUILDERS)!r}}}))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(output.strip().splitlines()[-1]) == here


# ------------------------------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("name", BUILDERS)
def test_bad_common_arguments_are_refused(name):
    builder = BUILDERS[name]
    with pytest.raises(
        ValueError, match=r"^`split` must be one of \['train', 'test_seen', 'test_unseen'\], got 'val'$"
    ):
        builder("val")
    with pytest.raises(ValueError, match=r"^`num_samples` must be a non-negative int or None, got -1$"):
        builder("train", -1)
    with pytest.raises(ValueError, match=r"^`seed` must be a non-negative int, got 1.5$"):
        builder("train", 2, seed=1.5)


@pytest.mark.parametrize("num_frames", [1, 4, 2.0, True, "3"])
def test_bad_num_frames_is_refused(num_frames):
    with pytest.raises(ValueError, match=rf"^`num_frames` must be an int in \[2, 3\], got {num_frames!r}$"):
        clip_qa_dataset("train", 2, num_frames=num_frames)


@pytest.mark.parametrize("num_examples", [0, 9, -1, None])
def test_bad_num_examples_is_refused(num_examples):
    with pytest.raises(
        ValueError, match=rf"^`num_examples` must be an int in \[1, 8\], got {num_examples!r}$"
    ):
        in_context_edit_dataset("train", 2, num_examples=num_examples)


def test_bad_parser_and_instruction_arguments_are_refused():
    with pytest.raises(ValueError, match=r"^`question_type` must be one of \['change', .*\], got 'colour'$"):
        parse_clip_answer("colour", "red")
    with pytest.raises(TypeError, match=r"^`text` must be a str, got int$"):
        parse_clip_answer("shape", 3)
    with pytest.raises(ValueError, match=r"^`composition` must be one of \['color', .*\], got 'size'$"):
        make_composition_instruction("size", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^`base_image` must be 0 or 1, got 2$"):
        make_composition_instruction("color", 2, np.random.default_rng(0))
    with pytest.raises(
        ValueError,
        match=r"^`row` lacks the columns \['frames', 'frame_combinations', 'answer'\] of a clip_qa_dataset row$",
    ):
        clip_qa_messages({"question": "What changes?"})


# ------------------------------------------------------------------------------------------------ chat records


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(SHIPPED)


def _with_images(messages: list[dict], images: list) -> list[dict]:
    """The messages with each image part holding its image, in order."""
    images = iter(images)
    return [
        {
            "role": turn["role"],
            "content": [
                {"type": "image", "image": next(images)} if part["type"] == "image" else part
                for part in turn["content"]
            ],
        }
        for turn in messages
    ]


WORDS = {"color": "colour", "x": "column", "y": "row"}


def _comparison(before_image, after_image) -> list[str]:
    """What an answer's side-by-side reading of two images must say, from the pixel reader: one ``"word before
    -> after"`` per attribute, `` (changed)`` after those that differ."""
    before, after = read_attributes(before_image), read_attributes(after_image)
    return [
        f"{WORDS.get(name, name)} {before[name]} -> {after[name]}"
        + (" (changed)" if before[name] != after[name] else "")
        for name in NAMES
    ]


@pytest.mark.parametrize(
    "build, to_chat",
    [
        (lambda: clip_qa_dataset("train", 4, seed=6), clip_qa_messages),
        (lambda: clip_qa_dataset("train", 2, seed=6, num_frames=2), clip_qa_messages),
        (lambda: composition_dataset("train", 4, seed=6), composition_messages),
        (lambda: in_context_edit_dataset("train", 3, seed=6, num_examples=3), in_context_messages),
    ],
)
def test_chat_records_render_through_the_shipped_processor(processor, build, to_chat):
    image_token, boi = processor.image_token, processor.image_token_layout.boi_token_id
    for row in build():
        record = to_chat(row)
        check_chat_record(record)
        images = record["images"]
        if to_chat is clip_qa_messages:
            expected = row["frames"]
        else:
            expected = [*row["images"], row["target_image"]]
        assert [_pixels(image).tobytes() for image in images] == [
            _pixels(image).tobytes() for image in expected
        ]
        messages = _with_images(record["messages"], images)
        text = processor.apply_chat_template(messages)
        inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
        assert int((inputs["input_ids"] == boi).sum()) == inputs["pixel_values"].shape[0] == len(images)
        eos = processor.tokenizer.eos_token
        if to_chat is clip_qa_messages:  # the frames are consecutive, then the question
            assert f"USER: {image_token * len(row['frames'])}{row['question']}\nASSISTANT:" in text
            # the answer compares the first and the last frame, then answers in its last sentence
            answer = text.rsplit("ASSISTANT:", 1)[1].removesuffix(eos)
            (comparison,) = re.fullmatch(r"First -> last frame: (.+)\. Answer: .+\.", answer).groups()
            assert comparison.split(", ") == _comparison(row["frames"][0], row["frames"][-1])
            assert parse_clip_answer(row["question_type"], answer) == row["answer"]
        else:  # one assistant turn: the inputs and the target described in words, then the target drawn
            assert text.count("ASSISTANT:") == 1 and text.endswith(f"{image_token}{eos}")
            answer = text.rsplit("ASSISTANT:", 1)[1].removesuffix(f"{image_token}{eos}")
            if to_chat is composition_messages:  # the borrowed value, then the base image described
                take = (
                    r"Take the (\w+) of the (\w+) image: ([\w ]+)\. Keep the rest of the (\w+) image: (.+\.) "
                )
                word, donor, value, base, *descriptions = re.fullmatch(
                    take + r"Result: (.+\.) ", answer
                ).groups()
                ordinals = ("first", "second")
                assert (base, donor) == (ordinals[row["base_image"]], ordinals[1 - row["base_image"]])
                donor_reading = read_attributes(row["images"][1 - row["base_image"]])
                borrowed = BORROWED[row["composition"]]
                assert word == WORDS.get(row["composition"], row["composition"])
                assert value == (
                    donor_reading["position"] if borrowed == ("x", "y") else donor_reading[borrowed[0]]
                )
                described = [row["images"][row["base_image"]], row["target_image"]]
            else:  # the first example pair read attribute by attribute, the edit, then the query described
                pattern = r"Example: (.+)\. Edit: the (\w+) becomes (\w+)\. Query: (.+\.) Result: (.+\.) "
                comparison, word, value, *descriptions = re.fullmatch(pattern, answer).groups()
                assert comparison.split(", ") == _comparison(*row["images"][:2])
                changed = [line.split()[0] for line in comparison.split(", ") if line.endswith(" (changed)")]
                assert changed == [word]
                assert word == WORDS.get(row["edited_attribute"], row["edited_attribute"])
                assert (
                    value == read_attributes(row["images"][1])[row["edited_attribute"]] == row["edit_value"]
                )
                described = [row["images"][-1], row["target_image"]]
            for description, image in zip(descriptions, described, strict=True):
                reading = read_attributes(image)
                assert parse_caption(description) == {name: reading[name] for name in NAMES}
        if to_chat is composition_messages:
            assert f"USER: {image_token}{image_token}{row['instruction']}\nASSISTANT:" in text
        if to_chat is in_context_messages:  # one line per example, the query, then the prompt
            lines = f"{image_token} -> {image_token}\n" * (len(row["images"]) // 2)
            assert f"USER: {lines}{image_token}{row['prompt']}\nASSISTANT:" in text
