"""SEED-Shapes texts of clips, compositions and in-context edits, and the parser of clip answers.

**Clip questions** (:data:`CLIP_QUESTIONS`) ask about a clip (a list of frames, see
`seed_hf.training.shapes.sequences`); each answer is computed from the frames' attributes and is a canonical
short string: an attribute value, a position name, a direction (``"left"``, ``"right"``, ``"up"``,
``"down"``), ``"grow"`` / ``"shrink"``, or the changed attribute (``"position"``, ``"color"``, ``"size"``,
``"background"``). :func:`parse_clip_answer` reads a free answer back into that canonical value.

**Composition instructions** (:data:`COMPOSITION_INSTRUCTIONS`) name a *base* image and a *donor* image (the
first or the second input, in either order); the target is the base with the donor's borrowed attribute.

**In-context prompts** (:data:`IN_CONTEXT_PROMPTS`) never name the edit: the examples show it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from .texts import (
    _BACKGROUND_LEXICON,
    _COLOR_LEXICON,
    _SHAPE_LEXICON,
    SHAPE_WORDS,
    _fix_articles,
    _lexicon,
    _pick,
    _read_position,
    _unique,
    _words,
)
from .world import ATTRIBUTE_VALUES, X_POSITIONS, ShapeAttributes, position_name

# what changes in a clip (position: the shape moves along x or y)
CLIP_CHANGES: tuple[str, ...] = ("position", "color", "size", "background")


def _changed_attribute(frames: Sequence[ShapeAttributes]) -> str:
    first, last = frames[0], frames[-1]
    (changed,) = {name for name, value in first.to_dict().items() if value != getattr(last, name)}
    return "position" if changed in ("x", "y") else changed


def _direction(frames: Sequence[ShapeAttributes]) -> str:
    first, last = frames[0], frames[-1]
    if first.x != last.x:
        return "right" if X_POSITIONS[last.x] > X_POSITIONS[first.x] else "left"
    # image rows grow downwards: a larger centre y is lower in the picture
    return "down" if ATTRIBUTE_VALUES["y"].index(last.y) > ATTRIBUTE_VALUES["y"].index(first.y) else "up"


# question type -> (templates, answer of a clip). Slot: shape (the clip's shape word; shape never changes in a
# clip). Templates never name the asked value, and no template is shared by two types.
CLIP_QUESTIONS: dict[str, tuple[tuple[str, ...], Callable[[Sequence[ShapeAttributes]], str]]] = {
    "change": (
        (
            "What changes in this clip?",
            "What changes over time?",
            "Which attribute changes across the frames?",
            "What is different between the first and the last frame?",
            "What property of the image changes?",
            "What is changing in the video?",
        ),
        _changed_attribute,
    ),
    "direction": (
        (
            "Where does the {shape} move?",
            "Which way does the shape move?",
            "In which direction does the {shape} go?",
            "Which direction is the {shape} moving in?",
            "Where is the shape heading?",
        ),
        _direction,
    ),
    "size_change": (
        (
            "Does the {shape} grow or shrink?",
            "Does it get bigger or smaller?",
            "Is the shape growing or shrinking?",
            "Does the {shape} become larger or smaller?",
        ),
        lambda frames: "grow" if frames[-1].size == "large" else "shrink",
    ),
    "shape": (
        (
            "What shape is it?",
            "What shape is shown in the clip?",
            "Which shape appears in every frame?",
            "What kind of shape is in the video?",
        ),
        lambda frames: frames[-1].shape,
    ),
    "start_color": (
        (
            "What colour is the {shape} at the start?",
            "What color is it in the first frame?",
            "What colour does the {shape} have at the beginning?",
            "Which color is the shape at first?",
        ),
        lambda frames: frames[0].color,
    ),
    "end_color": (
        (
            "What colour is it at the end?",
            "What color is the {shape} in the last frame?",
            "What colour does the {shape} end up?",
            "Which color is the shape in the final frame?",
        ),
        lambda frames: frames[-1].color,
    ),
    "start_position": (
        (
            "Where is the {shape} at the start?",
            "Where is the shape in the first frame?",
            "Where does the {shape} start?",
        ),
        lambda frames: frames[0].position,
    ),
    "end_position": (
        (
            "Where is it at the end?",
            "Where is the {shape} in the last frame?",
            "Where does the {shape} end up?",
            "Where does the shape stop?",
        ),
        lambda frames: frames[-1].position,
    ),
    "start_background": (
        (
            "What colour is the background at the start?",
            "What is the background color in the first frame?",
            "Which colour is the backdrop at the beginning?",
        ),
        lambda frames: frames[0].background,
    ),
    "end_background": (
        (
            "What colour is the background at the end?",
            "What color is the background in the last frame?",
            "What is the final background colour?",
        ),
        lambda frames: frames[-1].background,
    ),
}
# the questions about a change (drawn for half of the records, see `make_clip_question`)
_CHANGE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "position": ("change", "direction", "start_position", "end_position"),
    "color": ("change", "start_color", "end_color"),
    "size": ("change", "size_change"),
    "background": ("change", "start_background", "end_background"),
}
# the question types that only make sense for one change
_CHANGE_ONLY_QUESTIONS = {"direction": "position", "size_change": "size"}


def make_clip_question(frames: Sequence[ShapeAttributes], rng: np.random.Generator) -> tuple[str, str, str]:
    """
    A question about a clip: ``(question_type, question, canonical answer)``. Half of the questions are about
    its change (what changes, the direction, the colours or positions at the start and end, ...), the other
    half of any type that applies to the clip (``direction`` only to moves, ``size_change`` only to size
    changes).
    """
    change = _changed_attribute(frames)
    if rng.random() < 0.5:
        question_types = _CHANGE_QUESTIONS[change]
    else:
        question_types = tuple(
            question_type
            for question_type in CLIP_QUESTIONS
            if _CHANGE_ONLY_QUESTIONS.get(question_type, change) == change
        )
    question_type = _pick(rng, question_types)
    templates, answer = CLIP_QUESTIONS[question_type]
    question = _fix_articles(_pick(rng, templates).format(shape=_pick(rng, SHAPE_WORDS[frames[-1].shape])))
    return question_type, question, answer(frames)


_DIRECTION_LEXICON = _lexicon(
    {
        "left": ("left", "leftward", "leftwards"),
        "right": ("right", "rightward", "rightwards"),
        "up": ("up", "upward", "upwards", "top", "higher"),
        "down": ("down", "downward", "downwards", "bottom", "lower"),
    }
)
_SIZE_CHANGE_LEXICON = _lexicon(
    {
        "grow": ("grow", "grows", "growing", "grew", "bigger", "larger", "enlarges", "expands"),
        "shrink": ("shrink", "shrinks", "shrinking", "shrank", "smaller", "reduces"),
    }
)
_CHANGE_LEXICON = _lexicon(
    {
        "position": (
            "position",
            "location",
            "place",
            "move",
            "moves",
            "moving",
            "moved",
            "motion",
            "movement",
        ),
        "color": ("color", "colour", "colors", "colours", "recolored", "recoloured"),
        "size": ("size", "sizes", "grows", "shrinks", "bigger", "smaller", "larger", "scale"),
        "background": ("background", "backdrop", "backgrounds"),
    }
)


def _read_change(words: Sequence[str]) -> str | None:
    values = {_CHANGE_LEXICON[word] for word in words if word in _CHANGE_LEXICON}
    if "background" in values:  # "the background colour" names the background, not the shape's colour
        values.discard("color")
    return values.pop() if len(values) == 1 else None


def _read_position_name(words: Sequence[str]) -> str | None:
    x, y = _read_position(words)
    return position_name(x, y) if x is not None and y is not None else None


# question type -> reader of the words of an answer
_CLIP_ANSWER_READERS: dict[str, Callable[[Sequence[str]], str | None]] = {
    "change": _read_change,
    "direction": lambda words: _unique(words, _DIRECTION_LEXICON),
    "size_change": lambda words: _unique(words, _SIZE_CHANGE_LEXICON),
    "shape": lambda words: _unique(words, _SHAPE_LEXICON),
    "start_color": lambda words: _unique(words, _COLOR_LEXICON),
    "end_color": lambda words: _unique(words, _COLOR_LEXICON),
    "start_position": _read_position_name,
    "end_position": _read_position_name,
    "start_background": lambda words: _unique(words, _BACKGROUND_LEXICON),
    "end_background": lambda words: _unique(words, _BACKGROUND_LEXICON),
}


def parse_clip_answer(question_type: str, text: str) -> str | None:
    """
    The canonical answer (as in `CLIP_QUESTIONS`) that a free answer to a clip question gives, e.g.
    ``("direction", "It moves to the right.") -> "right"``, ``("size_change", "it gets bigger") -> "grow"``,
    ``("end_position", "upper left corner") -> "top left"``; `None` when the text names no value or several.
    An answer that reasons first (`sequences.clip_answer_text`) gives its answer in its last sentence, the only
    one read.
    """
    if question_type not in _CLIP_ANSWER_READERS:
        raise ValueError(f"`question_type` must be one of {list(CLIP_QUESTIONS)}, got {question_type!r}")
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    last_sentence = re.split(r"(?<=[.!?])\s+(?=\S)", text.strip())[-1]
    return _CLIP_ANSWER_READERS[question_type](_words(last_sentence))


# composition kind -> (borrowed attributes, instruction templates). Slots: base (the image that keeps every
# other attribute) and donor (the image that gives the borrowed ones).
COMPOSITIONS: dict[str, tuple[str, ...]] = {
    "color": ("color",),
    "background": ("background",),
    "position": ("x", "y"),
    "shape": ("shape",),
}
COMPOSITION_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "color": (
        "draw the shape of {base} in the colour of {donor}",
        "take the shape from {base} and give it the color of {donor}",
        "recolor {base}'s shape with {donor}'s colour",
        "make {base}'s shape the same color as the shape in {donor}",
        "show {base}, but with the shape in the colour of {donor}'s shape",
    ),
    "background": (
        "put {base}'s shape on {donor}'s background",
        "draw the shape of {base} on the background of {donor}",
        "use {donor}'s background for {base}",
        "move the shape from {base} onto the backdrop of {donor}",
        "show {base} with the background colour of {donor}",
    ),
    "position": (
        "move {base}'s shape to where the shape is in {donor}",
        "put the shape of {base} at {donor}'s position",
        "draw {base}'s shape at the position of the shape in {donor}",
        "place the shape from {base} where {donor}'s shape is",
    ),
    "shape": (
        "redraw {base} with the kind of shape shown in {donor}",
        "change {base}'s shape into the type of shape in {donor}, keeping its colour, size and position",
        "draw {base} but with {donor}'s shape type",
        "give the shape in {base} the form of the shape in {donor}",
    ),
}
# ways of naming the first and the second input image
_IMAGE_NAMES = (
    ("the first image", "the second image"),
    ("image 1", "image 2"),
    ("the first picture", "the second picture"),
)


def make_composition_instruction(composition: str, base_image: int, rng: np.random.Generator) -> str:
    """An instruction of a composition kind whose base is input `base_image` (0 or 1) and donor the other."""
    if composition not in COMPOSITION_INSTRUCTIONS:
        raise ValueError(
            f"`composition` must be one of {list(COMPOSITION_INSTRUCTIONS)}, got {composition!r}"
        )
    if base_image not in (0, 1):
        raise ValueError(f"`base_image` must be 0 or 1, got {base_image!r}")
    names = _IMAGE_NAMES[int(rng.integers(len(_IMAGE_NAMES)))]
    instruction = _pick(rng, COMPOSITION_INSTRUCTIONS[composition]).format(
        base=names[base_image], donor=names[1 - base_image]
    )
    return instruction[0].upper() + instruction[1:] + "."


IN_CONTEXT_PROMPTS: tuple[str, ...] = (
    "Do the same to this image.",
    "Now do the same to this one.",
    "Apply the same change to this image.",
    "Same edit here, please.",
    "Do the same here.",
    "What does this image become?",
)
