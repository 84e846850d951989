"""SEED-Shapes: a small synthetic world for training and judging a whole SEED stack on a CPU.

=================  ================================================================================
module             what it holds
=================  ================================================================================
`world`            attributes, the seen/unseen splits, exact rendering
`texts`            captions, questions, edit instructions, their parsers
`records`          `datasets.Dataset` builders of each split (captions, VQA, edits, dialogues)
`sequences`        builders of several-image records (clip QA, compositions, in-context edits) and
                   their chat layouts; their texts and the clip answer parser in `sequence_texts`
`reader`           reads the attributes of an image back from its pixels (judges the models)
`train`            `seed-hf train-shapes`: the stage graph (stages in `text_stages`, `image_stages`,
                   `token_stages`; the run's layout and recipe in `run`)
`evaluate`         `seed-hf evaluate-shapes`: every figure of the model card
=================  ================================================================================

The world's public names are importable from here (`from seed_hf.training.shapes import render`).
"""

from .records import caption_dataset, dialogue_dataset, edit_dataset, make_dialogue, vqa_dataset
from .sequence_texts import (
    CLIP_QUESTIONS,
    COMPOSITION_INSTRUCTIONS,
    IN_CONTEXT_PROMPTS,
    make_clip_question,
    make_composition_instruction,
    parse_clip_answer,
)
from .sequences import (
    clip_answer_text,
    clip_qa_dataset,
    clip_qa_messages,
    composition_dataset,
    composition_messages,
    in_context_edit_dataset,
    in_context_messages,
)
from .texts import (
    CAPTION_TEMPLATES,
    EDIT_INSTRUCTIONS,
    VQA_QUESTIONS,
    describe,
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
    "CLIP_QUESTIONS",
    "COLORS",
    "COMPOSITION_INSTRUCTIONS",
    "EDIT_INSTRUCTIONS",
    "IMAGE_SIZE",
    "IN_CONTEXT_PROMPTS",
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
    "clip_answer_text",
    "clip_qa_dataset",
    "clip_qa_messages",
    "composition_dataset",
    "composition_messages",
    "describe",
    "dialogue_dataset",
    "edit_dataset",
    "in_context_edit_dataset",
    "in_context_messages",
    "make_caption",
    "make_clip_question",
    "make_composition_instruction",
    "make_dialogue",
    "make_edit_instruction",
    "make_question",
    "neighbours",
    "parse_caption",
    "parse_clip_answer",
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
