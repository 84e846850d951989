"""SEED-Shapes datasets: records of the world's splits (see `seed_hf.training.shapes.world`).

**Sampling.** Sample ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, kind, i])``, so
it does not depend on the number of samples asked for (a shorter dataset is a prefix of a longer one), nor on
the process (no Python ``hash``); numpy's PCG64 streams are the same on every platform. The combination of
sample ``i`` is ``order[i % n]``, where ``order`` is the split's ``n`` combinations sorted by a seed-dependent
SHA-256: every combination is used equally often (``num_samples=None`` gives each exactly once). Each
combination has thousands of distinct caption phrasings.

**Builders** return `datasets.Dataset` objects with `datasets.Image` columns (PNG) and one string column
per attribute: :func:`caption_dataset`, :func:`vqa_dataset`, :func:`edit_dataset`, :func:`dialogue_dataset`
(chat records in the ``messages`` / ``images`` layout of `seed_hf.training.data`).

"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from .texts import _pick, make_caption, make_edit_instruction, make_question, neighbours
from .world import (
    ATTRIBUTE_NAMES,
    SPLITS,
    ShapeAttributes,
    _check_split,
    _hash_int,
    _image_cell,
    seen_combinations,
    split_combinations,
)

# number of hash buckets of records; bucket 0 is test_seen's
_RECORD_BUCKETS = 10
# a test_seen record is found by redrawing the text; this bounds the redraws (expected: 10)
_MAX_REDRAWS = 1000
_PROGRESS_MIN_ROWS = 5000


_SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}
_KIND_CODES = {
    "caption": 0,
    "vqa": 1,
    "edit": 2,
    "dialogue": 3,
    # the builders of `sequences`
    "clip_qa": 4,
    "composition": 5,
    "in_context_edit": 6,
}


def _combination_order(split: str, kind: str, seed: int) -> tuple[int, ...]:
    return tuple(
        sorted(split_combinations(split), key=lambda index: _hash_int(f"{seed}/{split}/{kind}/{index}"))
    )


def _record_bucket(indices: Sequence[int], text: str) -> int:
    return _hash_int("/".join(map(str, indices)) + "|" + text) % _RECORD_BUCKETS


def _draw(
    split: str, indices: Sequence[int], draw_text: Callable[[], Any], text_of: Callable[[Any], str]
) -> Any:
    """Draw a record's text until its bucket fits the split (see the module docstring)."""
    for _ in range(_MAX_REDRAWS):
        record = draw_text()
        if split == "test_unseen" or (_record_bucket(indices, text_of(record)) == 0) == (
            split == "test_seen"
        ):
            return record
    raise RuntimeError(f"found no {split} text for combinations {list(indices)} in {_MAX_REDRAWS} draws")


def _edit_chain(target: int, num_edits: int, rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """
    A chain of `num_edits` one-attribute edits ending at `target`: ``[(index, attribute, value), ...]`` where
    each step edits the previous image's `attribute` to `value` (the first entry is the start: no edit).
    Every image but the last is a seen combination.
    """
    seen = set(seen_combinations())
    chain = [(target, "", "")]
    for _ in range(num_edits):
        current = ShapeAttributes.from_index(chain[0][0])
        options = [(name, previous) for name, _, previous in neighbours(current) if previous.index in seen]
        name, previous = options[int(rng.integers(len(options)))]
        chain[0] = (chain[0][0], name, getattr(current, name))
        chain.insert(0, (previous.index, "", ""))
    return chain


def _sample_rng(seed: int, split: str, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], _KIND_CODES[kind], index])


def _progress(num_samples: int, kind: str, split: str):
    """The sample indices, with a progress bar for builds long enough to want one."""
    return tqdm(
        range(num_samples),
        desc=f"SEED-Shapes {kind} ({split})",
        unit="row",
        disable=num_samples < _PROGRESS_MIN_ROWS,
    )


def _check_arguments(split: str, num_samples: int | None, seed: int) -> int:
    _check_split(split)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    if num_samples is None:
        return len(split_combinations(split))
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
        raise ValueError(f"`num_samples` must be a non-negative int or None, got {num_samples!r}")
    return int(num_samples)


def _attribute_columns(attributes: ShapeAttributes, prefix: str = "") -> dict[str, Any]:
    columns: dict[str, Any] = {f"{prefix}{name}": getattr(attributes, name) for name in ATTRIBUTE_NAMES}
    columns[f"{prefix}position"] = attributes.position
    columns[f"{prefix}combination"] = attributes.index
    return columns


def _attribute_features(prefix: str = "") -> dict[str, Any]:
    features: dict[str, Any] = {f"{prefix}{name}": datasets.Value("string") for name in ATTRIBUTE_NAMES}
    features[f"{prefix}position"] = datasets.Value("string")
    features[f"{prefix}combination"] = datasets.Value("int32")
    return features


def _build(rows: list[dict[str, Any]], features: dict[str, Any], split: str) -> datasets.Dataset:
    features = datasets.Features(features)
    columns = {name: [row[name] for row in rows] for name in features}
    return datasets.Dataset.from_dict(columns, features=features, split=datasets.NamedSplit(split))


def caption_dataset(split: str = "train", num_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
    """
    Image-caption pairs: columns ``image``, ``text`` and the attributes (``background``, ``shape``, ``size``,
    ``color``, ``x``, ``y``, ``position``, ``combination``).

    Args:
        split: ``"train"``, ``"test_seen"`` or ``"test_unseen"``.
        num_samples: number of rows (defaults to one per combination of the split: 875 or 97).
        seed: seed of the combination order and of the text draws.
    """
    num_samples = _check_arguments(split, num_samples, seed)
    order = _combination_order(split, "caption", seed)
    rows = []
    for i in _progress(num_samples, "caption", split):
        index, rng = order[i % len(order)], _sample_rng(seed, split, "caption", i)
        text = _draw(split, [index], lambda index=index, rng=rng: make_caption(index, rng), str)
        rows.append(
            {
                "image": _image_cell(index),
                "text": text,
                **_attribute_columns(ShapeAttributes.from_index(index)),
            }
        )
    return _build(
        rows, {"image": datasets.Image(), "text": datasets.Value("string"), **_attribute_features()}, split
    )


def vqa_dataset(split: str = "train", num_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
    """
    Visual question answering: columns ``image``, ``question``, ``answer`` (canonical short answer),
    ``question_type`` (color, shape, size, position, x, y or background) and the attributes.

    Arguments as in :func:`caption_dataset`.
    """
    num_samples = _check_arguments(split, num_samples, seed)
    order = _combination_order(split, "vqa", seed)
    rows = []
    for i in _progress(num_samples, "vqa", split):
        index, rng = order[i % len(order)], _sample_rng(seed, split, "vqa", i)
        question_type, question, answer = _draw(
            split, [index], lambda index=index, rng=rng: make_question(index, rng), lambda record: record[1]
        )
        rows.append(
            {
                "image": _image_cell(index),
                "question": question,
                "answer": answer,
                "question_type": question_type,
                **_attribute_columns(ShapeAttributes.from_index(index)),
            }
        )
    features = {name: datasets.Value("string") for name in ("question", "answer", "question_type")}
    return _build(rows, {"image": datasets.Image(), **features, **_attribute_features()}, split)


def edit_dataset(split: str = "train", num_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
    """
    Edit pairs that change exactly one attribute: columns ``image`` (source), ``instruction``,
    ``target_image``, ``edited_attribute``, the source attributes (``background``, ..., ``combination``) and
    the target attributes (``target_background``, ..., ``target_combination``).

    The split's combinations are the *targets*; sources are seen combinations one edit away. Arguments as in
    :func:`caption_dataset`.
    """
    num_samples = _check_arguments(split, num_samples, seed)
    order = _combination_order(split, "edit", seed)
    rows = []
    for i in _progress(num_samples, "edit", split):
        target, rng = order[i % len(order)], _sample_rng(seed, split, "edit", i)

        def draw(target=target, rng=rng):
            (source, _, _), (_, attribute, value) = _edit_chain(target, 1, rng)
            return source, attribute, make_edit_instruction(source, attribute, value, rng)

        source, attribute, instruction = _draw(
            split, [target], draw, lambda record: f"{record[0]}|{record[2]}"
        )
        rows.append(
            {
                "image": _image_cell(source),
                "instruction": instruction,
                "target_image": _image_cell(target),
                "edited_attribute": attribute,
                **_attribute_columns(ShapeAttributes.from_index(source)),
                **_attribute_columns(ShapeAttributes.from_index(target), prefix="target_"),
            }
        )
    features = {
        "image": datasets.Image(),
        "instruction": datasets.Value("string"),
        "target_image": datasets.Image(),
        "edited_attribute": datasets.Value("string"),
        **_attribute_features(),
        **_attribute_features("target_"),
    }
    return _build(rows, features, split)


_GENERATE_REQUESTS = (
    "Draw {}.",
    "Generate an image of {}.",
    "Create a picture of {}.",
    "Please draw {}.",
    "Show me {}.",
)
_DESCRIBE_REQUESTS = (
    "Describe this image.",
    "What do you see?",
    "What is in this picture?",
    "Caption this image.",
)


def _text_part(text: str) -> dict[str, str | None]:
    return {"type": "text", "text": text}


_IMAGE_PART = {"type": "image", "text": None}


def make_dialogue(chain: Sequence[tuple[int, str, str]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """
    Chat messages for an edit chain (see `_edit_chain`): an opening turn that either asks for the first
    image (the assistant answers with it) or shows it and asks for a description (the assistant answers with
    a caption), one user instruction / assistant image turn per edit, then a question about the last image.
    Images are `{"type": "image"}` parts, numbered by order of appearance.
    """
    first = chain[0][0]
    if rng.random() < 0.5:
        request = _pick(rng, _GENERATE_REQUESTS).format(make_caption(first, rng, noun_phrase=True))
        messages = [
            {"role": "user", "content": [_text_part(request)]},
            {"role": "assistant", "content": [_IMAGE_PART]},
        ]
    else:
        messages = [
            {"role": "user", "content": [_IMAGE_PART, _text_part(_pick(rng, _DESCRIBE_REQUESTS))]},
            {"role": "assistant", "content": [_text_part(make_caption(first, rng))]},
        ]
    for (previous, _, _), (_, attribute, value) in zip(chain[:-1], chain[1:], strict=True):
        messages.append(
            {"role": "user", "content": [_text_part(make_edit_instruction(previous, attribute, value, rng))]}
        )
        messages.append({"role": "assistant", "content": [_IMAGE_PART]})
    _, question, answer = make_question(chain[-1][0], rng)
    messages.append({"role": "user", "content": [_text_part(question)]})
    messages.append({"role": "assistant", "content": [_text_part(answer)]})
    return messages


def _messages_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(
        f"{turn['role']}: " + " ".join(part["text"] or "<image>" for part in turn["content"])
        for turn in messages
    )


def dialogue_dataset(
    split: str = "train", num_samples: int | None = None, seed: int = 0, max_edits: int = 2
) -> datasets.Dataset:
    """
    Multi-turn dialogues (generate or describe -> 1..`max_edits` edits -> question) in the chat layout of
    `seed_hf.training.data`: columns ``messages``, ``images`` (the images of the `{"type": "image"}` parts, in
    order), ``image_combinations`` (their combination indices) and the attributes of the final image.

    The split's combinations are the final images; every earlier image is a seen combination. Other arguments
    as in :func:`caption_dataset`.
    """
    num_samples = _check_arguments(split, num_samples, seed)
    if not isinstance(max_edits, int) or max_edits < 1:
        raise ValueError(f"`max_edits` must be a positive int, got {max_edits!r}")
    order = _combination_order(split, "dialogue", seed)
    rows = []
    for i in _progress(num_samples, "dialogue", split):
        final, rng = order[i % len(order)], _sample_rng(seed, split, "dialogue", i)

        def draw(final=final, rng=rng):
            chain = _edit_chain(final, int(rng.integers(1, max_edits + 1)), rng)
            return chain, make_dialogue(chain, rng)

        chain, messages = _draw(
            split,
            [final],
            draw,
            lambda record: "/".join(str(step[0]) for step in record[0]) + "|" + _messages_text(record[1]),
        )
        indices = [index for index, _, _ in chain]
        rows.append(
            {
                "messages": messages,
                "images": [_image_cell(index) for index in indices],
                "image_combinations": indices,
                **_attribute_columns(ShapeAttributes.from_index(final)),
            }
        )
    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    features = {
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.List(part)}),
        "images": datasets.List(datasets.Image()),
        "image_combinations": datasets.List(datasets.Value("int32")),
        **_attribute_features(),
    }
    return _build(rows, features, split)
