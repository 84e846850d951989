"""SEED-Shapes: a small synthetic world for training and judging a whole SEED stack on a CPU.

=================  ================================================================================
module             what it holds
=================  ================================================================================
`world`            attributes, the seen/unseen splits, exact rendering
`texts`            captions, questions, edit instructions, their parsers
`records`          `datasets.Dataset` builders of each split (captions, VQA, edits, dialogues)
`reader`           reads the attributes of an image back from its pixels (judges the models)
`train`            `seed-hf train-shapes`: the stage graph (stages in `text_stages`, `image_stages`,
                   `token_stages`; the run's layout and recipe in `run`)
`evaluate`         `seed-hf evaluate-shapes`: every figure of the model card
=================  ================================================================================

The world's public names are importable from here (`from seed_hf.training.shapes import render`).
"""

from .records import caption_dataset, dialogue_dataset, edit_dataset, make_dialogue, vqa_dataset
from .texts import (
    CAPTION_TEMPLATES,
    EDIT_INSTRUCTIONS,
    VQA_QUESTIONS,
    make_caption,
    make_edit_instruction,
    make_question,
    neighbours,
    parse_caption,
    parse_edit_instruction,
)
from .world import (
    ATTRIBUTE_NAMES,
    ATTRIBUTE_VALUES,
    BACKGROUNDS,
    COLORS,
    IMAGE_SIZE,
    NUM_COMBINATIONS,
    NUM_UNSEEN,
    SHAPES,
    SIZES,
    SPLITS,
    X_POSITIONS,
    Y_POSITIONS,
    ShapeAttributes,
    as_attributes,
    position_name,
    render,
    render_array,
    seen_combinations,
    shape_mask,
    split_combinations,
    unseen_combinations,
)

__all__ = [
    "ATTRIBUTE_NAMES",
    "ATTRIBUTE_VALUES",
    "BACKGROUNDS",
    "CAPTION_TEMPLATES",
    "COLORS",
    "EDIT_INSTRUCTIONS",
    "IMAGE_SIZE",
    "NUM_COMBINATIONS",
    "NUM_UNSEEN",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "ShapeAttributes",
    "VQA_QUESTIONS",
    "X_POSITIONS",
    "Y_POSITIONS",
    "as_attributes",
    "caption_dataset",
    "dialogue_dataset",
    "edit_dataset",
    "make_caption",
    "make_dialogue",
    "make_edit_instruction",
    "make_question",
    "neighbours",
    "parse_caption",
    "parse_edit_instruction",
    "position_name",
    "render",
    "render_array",
    "seen_combinations",
    "shape_mask",
    "split_combinations",
    "unseen_combinations",
    "vqa_dataset",
]
