"""The several-image figures of `seed-hf evaluate-shapes`: questions about clips, compositions and in-context edits.

The held-out records come from `seed_hf.training.shapes.sequences` (``test_seen``: texts and image sets no training
record used; ``test_unseen``: the last image, i.e. the clip's last frame or the image to draw, is an unseen
combination). The prompts are the records' chat layouts without their answer, so the model is asked exactly as it
was trained; a clip's frames are consecutive images, as `SeedLlamaProcessor` writes a video. Drawings are judged by
the pixel reader, answers by `sequence_texts.parse_clip_answer`.

Figures (per split):

- `clip_qa`: exact-answer accuracy on questions about clips, overall and per question type;
- `composition`: per-attribute and all-attribute accuracy of the image drawn from two images and an instruction
  (`seed_hf.training.shapes.reader.attribute_accuracy`), and all-attribute accuracy per composition kind;
- `in_context_edit`: the same for the image drawn from example edit pairs and a query image, and all-attribute
  accuracy per edited attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import sequences
from .reader import attribute_accuracy
from .sequence_texts import parse_clip_answer

SEQUENCE_TASKS = ("clip_qa", "composition", "in_context_edit")
# a clip answer compares two frames before answering (`sequences.clip_answer_text`): up to about 70 tokens
CLIP_ANSWER_TOKENS = 96
# a drawing answer's text: about 66 tokens for a composition (`sequences.composition_messages`), 104 for an
# in-context edit (`sequences.in_context_messages`)
DRAWING_ANSWER_TOKENS = 144


def prompt_conversation(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A chat record (``{"messages", "images"}`` of `sequences.clip_qa_messages` and the like) as the conversation a
    pipeline takes: the image parts given their images in order, and the last turn (the answer) left out."""
    images = iter(record["images"])
    return [
        {
            "role": turn["role"],
            "content": [
                {"type": "image", "image": next(images)}
                if part["type"] == "image"
                else {"type": "text", "text": part["text"]}
                for part in turn["content"]
            ],
        }
        for turn in record["messages"][:-1]
    ]


def _grouped_all_accuracy(readings: Sequence[Any], rows, group_column: str) -> dict[str, float]:
    """All-attribute accuracy of the drawn images per value of `group_column`."""
    groups: dict[str, list[int]] = {}
    for position, value in enumerate(rows[group_column]):
        groups.setdefault(value, []).append(position)
    targets = rows["target_combination"]
    return {
        value: attribute_accuracy(
            [readings[position] for position in positions], [targets[position] for position in positions]
        )["all"]
        for value, positions in sorted(groups.items())
    }


def accuracy_per_type(types: Sequence[str], right: Sequence[bool]) -> dict[str, Any]:
    """Overall accuracy and accuracy per question type, from each answer's type and rightness."""
    per_type: dict[str, list[bool]] = {}
    for question_type, correct in zip(types, right, strict=True):
        per_type.setdefault(question_type, []).append(correct)
    return {
        "accuracy": float(np.mean(right)),
        "per_question_type": {name: float(np.mean(values)) for name, values in sorted(per_type.items())},
    }


class SequenceTaskEvaluation:
    """The several-image tasks of [`ShapesEvaluator`], over its `num_samples`, `seed`, `_read` (answers) and
    `_draw_readings` (readings and images of the drawings)."""

    num_samples: int
    seed: int
    _read: Callable[..., list[str]]
    _draw_readings: Callable[..., tuple[list[dict[str, Any]], list[Any]]]

    def evaluate_clip_qa(self, split: str) -> dict[str, Any]:
        rows = sequences.clip_qa_dataset(split, self.num_samples, seed=self.seed)
        answers = self._read(
            [prompt_conversation(sequences.clip_qa_messages(row)) for row in rows], CLIP_ANSWER_TOKENS
        )
        right = [
            parse_clip_answer(question_type, answer) == truth
            for question_type, answer, truth in zip(
                rows["question_type"], answers, rows["answer"], strict=True
            )
        ]
        return {
            **accuracy_per_type(rows["question_type"], right),
            "count": len(rows),
            "examples": [
                f"{question} -> {answer}"
                for question, answer in zip(rows["question"][:3], answers[:3], strict=True)
            ],
        }

    def _evaluate_drawn(
        self, rows, chat_record: Callable[[Mapping[str, Any]], dict[str, list]], group_column: str
    ) -> tuple[dict[str, Any], list[Any]]:
        # the answers describe their inputs and target before drawing it (`sequences.composition_messages`)
        readings, images = self._draw_readings(
            [prompt_conversation(chat_record(row)) for row in rows],
            force_image=False,
            answer_tokens=DRAWING_ANSWER_TOKENS,
        )
        result = attribute_accuracy(readings, list(rows["target_combination"]))
        result[f"all_per_{group_column}"] = _grouped_all_accuracy(readings, rows, group_column)
        return result, images

    def evaluate_composition(self, split: str) -> tuple[dict[str, Any], list[Any]]:
        rows = sequences.composition_dataset(split, self.num_samples, seed=self.seed)
        return self._evaluate_drawn(rows, sequences.composition_messages, "composition")

    def evaluate_in_context_edit(self, split: str) -> tuple[dict[str, Any], list[Any]]:
        rows = sequences.in_context_edit_dataset(split, self.num_samples, seed=self.seed)
        return self._evaluate_drawn(rows, sequences.in_context_messages, "edited_attribute")


__all__ = ["SEQUENCE_TASKS", "SequenceTaskEvaluation", "accuracy_per_type", "prompt_conversation"]
