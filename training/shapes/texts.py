"""SEED-Shapes texts: captions, questions, edit instructions and dialogues, and their parsers.

**Text.** Captions (:func:`make_caption`) come from templates with synonyms (e.g. "a large red circle on a
white background in the top left corner", "Top-left: big red disc over white") and always name all five
attributes; :func:`parse_caption` reads them back (and reasonable free text). Position conventions: a
single named side means the middle of that side ("on the left" = middle left, "at the top" = top center);
edit instructions that move the shape name an absolute target ("move it to the left" = to the left column,
keeping the row). VQA answers are canonical short strings (attribute values, or the position name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .world import (
    ATTRIBUTE_NAMES,
    ATTRIBUTE_VALUES,
    X_POSITIONS,
    Y_POSITIONS,
    ShapeAttributes,
    as_attributes,
)

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
COLOR_WORDS = {
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "violet"),
    "orange": ("orange",),
}
SHAPE_WORDS = {"circle": ("circle", "disc", "disk"), "square": ("square",), "triangle": ("triangle",)}
BACKGROUND_WORDS = {"white": ("white",), "black": ("black",), "gray": ("gray", "grey")}
Y_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
X_WORDS = {"left": ("left",), "right": ("right",)}
CENTER_WORDS = ("center", "centre", "middle")

# what the parsers accept on top of the generators' words (free text)
_EXTRA_WORDS = {
    "size": {"small": ("smaller", "mini"), "large": ("larger", "bigger", "giant")},
    "shape": {
        "circle": ("circles", "circular", "round", "discs", "disks"),
        "square": ("squares", "squared"),
        "triangle": ("triangles", "triangular"),
    },
    "center": ("central", "centered", "centred", "centrally"),
}


def _lexicon(*word_maps: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """word -> value, over several value -> words maps."""
    return {word: value for word_map in word_maps for value, words in word_map.items() for word in words}


_SIZE_LEXICON = _lexicon(SIZE_WORDS, _EXTRA_WORDS["size"])
_COLOR_LEXICON = _lexicon(COLOR_WORDS)
_SHAPE_LEXICON = _lexicon(SHAPE_WORDS, _EXTRA_WORDS["shape"])
_BACKGROUND_LEXICON = _lexicon(BACKGROUND_WORDS)
_Y_LEXICON = _lexicon(Y_WORDS)
_X_LEXICON = _lexicon(X_WORDS)
_CENTER_LEXICON = frozenset(CENTER_WORDS + _EXTRA_WORDS["center"])


def _words(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    return re.findall(r"[a-z]+", text.lower())


def _unique(words: Sequence[str], lexicon: Mapping[str, str]) -> str | None:
    """The one value the words name, or None when they name none or several."""
    values = {lexicon[word] for word in words if word in lexicon}
    return values.pop() if len(values) == 1 else None


def _read_position(words: Sequence[str]) -> tuple[str | None, str | None]:
    """(x, y) named by the words; a missing axis is the middle one, provided some position word is there."""
    x, y = _unique(words, _X_LEXICON), _unique(words, _Y_LEXICON)
    named_x = any(word in _X_LEXICON for word in words)
    named_y = any(word in _Y_LEXICON for word in words)
    if not (named_x or named_y or any(word in _CENTER_LEXICON for word in words)):
        return None, None
    return (x if named_x else "center"), (y if named_y else "middle")


def parse_caption(text: str) -> dict[str, str | None]:
    """
    Read the attributes a caption (or free text) names.

    Returns a dict with the six attribute keys; an attribute is `None` when the text names no value for it
    or several different ones (e.g. "small" and "large"). Background words are white/black/gray(grey),
    shape colours are the six palette names, so the two never compete. Position: a side word alone means
    the middle of that side; centre words alone mean the centre; no position word gives x = y = None.
    """
    words = _words(text)
    x, y = _read_position(words)
    return {
        "background": _unique(words, _BACKGROUND_LEXICON),
        "shape": _unique(words, _SHAPE_LEXICON),
        "size": _unique(words, _SIZE_LEXICON),
        "color": _unique(words, _COLOR_LEXICON),
        "x": x,
        "y": y,
    }


# ---------------------------------------------------------------------------------------------------------
# text generators; `rng` is a numpy Generator


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _fix_articles(text: str) -> str:
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def _position_noun(attributes: ShapeAttributes, rng: np.random.Generator) -> str:
    """A noun phrase for the position: "top-left", "upper right corner", "left side", "centre", ..."""
    x, y = attributes.x, attributes.y
    if x != "center" and y != "middle":
        y_word, x_word = _pick(rng, Y_WORDS[y]), _pick(rng, X_WORDS[x])
        return _pick(
            rng,
            (
                f"{y_word} {x_word}",
                f"{y_word}-{x_word}",
                f"{y_word} {x_word} corner",
                f"{y_word}-{x_word} corner",
            ),
        )
    if y != "middle":
        y_word = _pick(rng, Y_WORDS[y])
        return _pick(
            rng, (y_word, f"{y_word} center", f"{y_word} centre", f"{y_word} middle", f"{y_word} edge")
        )
    if x != "center":
        x_word = _pick(rng, X_WORDS[x])
        return _pick(rng, (x_word, f"{x_word} side", f"middle {x_word}", f"{x_word}-hand side"))
    return _pick(rng, CENTER_WORDS + ("very center", "middle of the image"))


def _position_adverbial(attributes: ShapeAttributes, rng: np.random.Generator) -> str:
    """A prepositional phrase for the position: "in the top left corner", "on the left", "at the centre", ..."""
    noun = _position_noun(attributes, rng)
    if attributes.x != "center" and attributes.y == "middle":
        return f"{_pick(rng, ('on the', 'at the'))} {noun}"
    if attributes.x == "center" and attributes.y != "middle":
        return f"{_pick(rng, ('at the', 'near the', 'along the'))} {noun}"
    return f"{_pick(rng, ('in the', 'at the'))} {noun}"


# (template, is a noun phrase that can follow "draw ..."); slots: size, color, shape, background,
# at (adverbial position), where (position noun)
CAPTION_TEMPLATES: tuple[tuple[str, bool], ...] = (
    ("a {size} {color} {shape} on a {background} background {at}", True),
    ("a {size} {color} {shape} {at} on a {background} background", True),
    ("{where}: {size} {color} {shape} over {background}", False),
    ("{where}: a {size} {color} {shape} on {background}", False),
    ("a {background} background with a {size} {color} {shape} {at}", True),
    ("{size} {color} {shape}, {where}, {background} background", False),
    ("an image of a {size} {color} {shape} {at}, set against a {background} backdrop", True),
    ("a picture showing a {size} {color} {shape} {at} against {background}", True),
    ("{background} background, {size} {color} {shape} {at}", False),
    ("the {shape} is {color} and {size}, placed {at} on a {background} background", False),
    ("one {size} {color} {shape} sits {at}; the background is {background}", False),
    ("a {size} {shape} in {color} {at} on a plain {background} canvas", True),
    ("a {color} {shape} of {size} size {at}, {background} background", True),
    ("{at}, there is a {size} {color} {shape} on {background}", False),
    ("a {size}, {color} {shape} positioned {at} over a {background} background", True),
    ("{size} {color} {shape} ({where}) on a {background} background", False),
)


def _caption_slots(attributes: ShapeAttributes, rng: np.random.Generator) -> dict[str, str]:
    return {
        "size": _pick(rng, SIZE_WORDS[attributes.size]),
        "color": _pick(rng, COLOR_WORDS[attributes.color]),
        "shape": _pick(rng, SHAPE_WORDS[attributes.shape]),
        "background": _pick(rng, BACKGROUND_WORDS[attributes.background]),
        "at": _position_adverbial(attributes, rng),
        "where": _position_noun(attributes, rng),
    }


def make_caption(
    attributes: ShapeAttributes | Mapping[str, Any] | int,
    rng: np.random.Generator,
    template: int | None = None,
    noun_phrase: bool = False,
) -> str:
    """
    A caption naming all five attributes of a combination.

    Args:
        attributes: the combination.
        rng: numpy Generator the template, synonyms and casing are drawn from.
        template: index in `CAPTION_TEMPLATES` to use (drawn when `None`).
        noun_phrase: only use noun-phrase templates (which read well after "Draw ..."), lower-case, no
            final full stop.
    """
    attributes = as_attributes(attributes)
    candidates = [i for i, (_, is_noun) in enumerate(CAPTION_TEMPLATES) if is_noun or not noun_phrase]
    if template is None:
        template = candidates[int(rng.integers(len(candidates)))]
    elif template not in candidates:
        raise ValueError(f"`template` must be one of {candidates}, got {template!r}")
    text = _fix_articles(CAPTION_TEMPLATES[template][0].format(**_caption_slots(attributes, rng)))
    if noun_phrase:
        return text
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    return text + "." if rng.random() < 0.5 else text


def describe(attributes: ShapeAttributes | Mapping[str, Any] | int) -> str:
    """The canonical sentence naming a combination's five attributes, e.g. "A large red circle at the top left on
    a white background." (the description several-image answers give before drawing their image)."""
    attributes = as_attributes(attributes)
    text = (
        f"a {attributes.size} {attributes.color} {attributes.shape} at the "
        f"{attributes.position} on a {attributes.background} background"
    )
    return _fix_articles(text[0].upper() + text[1:]) + "."


# VQA: question type -> (templates, answer of a combination). Templates never name the asked attribute.
VQA_QUESTIONS: dict[str, tuple[tuple[str, ...], Callable[[ShapeAttributes], str]]] = {
    "color": (
        (
            "What color is the {shape}?",
            "What colour is the {shape}?",
            "What color is the shape?",
            "What colour is the object in the image?",
            "Which color does the {shape} have?",
            "What is the colour of the {size} {shape}?",
            "Name the color of the shape.",
            "Tell me the colour of the {shape} on the {background} background.",
        ),
        lambda attributes: attributes.color,
    ),
    "shape": (
        (
            "What shape is the {color} object?",
            "What shape is shown?",
            "Which shape is in the image?",
            "What kind of shape is this?",
            "Is it a circle, a square or a triangle?",
            "What is the {size} {color} thing?",
            "Name the shape in the picture.",
            "What shape is drawn {at}?",
        ),
        lambda attributes: attributes.shape,
    ),
    "size": (
        (
            "Is the {shape} small or large?",
            "What size is the {shape}: small or large?",
            "Is the shape big or small?",
            "What size is the {color} {shape}?",
            "Is the object large or small?",
            "Is the {color} shape small or large?",
            "What is the size of the {shape} {at}?",
        ),
        lambda attributes: attributes.size,
    ),
    "position": (
        (
            "Where is the {shape}?",
            "Where is the {color} {shape} located?",
            "In which part of the image is the shape?",
            "Where in the picture is the {color} object?",
            "What is the position of the {size} {shape}?",
            "Where is the shape on the {background} background?",
        ),
        lambda attributes: attributes.position,
    ),
    "x": (
        (
            "Is the {shape} on the left, in the center or on the right?",
            "Horizontally, where is the {color} shape: left, center or right?",
            "Which column is the {shape} in: left, center or right?",
            "Is the {color} {shape} left, centre or right?",
        ),
        lambda attributes: attributes.x,
    ),
    "y": (
        (
            "Is the {shape} at the top, in the middle or at the bottom?",
            "Vertically, where is the {color} shape: top, middle or bottom?",
            "Which row is the {shape} in: top, middle or bottom?",
            "Is the {color} {shape} top, middle or bottom?",
        ),
        lambda attributes: attributes.y,
    ),
    "background": (
        (
            "What color is the background?",
            "What colour is the background?",
            "What is the background color?",
            "Is the background white, black or gray?",
            "Which colour is the backdrop behind the {shape}?",
            "What color is behind the {color} {shape}?",
        ),
        lambda attributes: attributes.background,
    ),
}


def make_question(
    attributes: ShapeAttributes | Mapping[str, Any] | int,
    rng: np.random.Generator,
    question_type: str | None = None,
) -> tuple[str, str, str]:
    """A VQA pair about a combination: ``(question_type, question, canonical answer)``."""
    attributes = as_attributes(attributes)
    if question_type is None:
        question_type = _pick(rng, tuple(VQA_QUESTIONS))
    elif question_type not in VQA_QUESTIONS:
        raise ValueError(f"`question_type` must be one of {list(VQA_QUESTIONS)}, got {question_type!r}")
    templates, answer = VQA_QUESTIONS[question_type]
    question = _fix_articles(_pick(rng, templates).format(**_caption_slots(attributes, rng)))
    return question_type, question, answer(attributes)


# Edits name an absolute target value. Slots: value (the new value's word), shape (the current shape's word).
EDIT_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "color": (
        "make it {value}",
        "change the color to {value}",
        "change its colour to {value}",
        "paint it {value}",
        "recolor the {shape} {value}",
        "turn the {shape} {value}",
        "make the {shape} {value}",
        "color it {value}",
    ),
    "shape": (
        "turn it into a {value}",
        "make it a {value}",
        "change the shape to a {value}",
        "replace the {shape} with a {value}",
        "change it into a {value}",
        "reshape it into a {value}",
    ),
    "size:large": (
        "make it bigger",
        "make it larger",
        "enlarge it",
        "make the {shape} large",
        "scale it up",
        "make it big",
    ),
    "size:small": (
        "make it smaller",
        "shrink it",
        "make the {shape} small",
        "scale it down",
        "make it little",
    ),
    "background": (
        "change the background to {value}",
        "make the background {value}",
        "use a {value} background",
        "set the background to {value}",
        "put it on a {value} background",
        "switch to a {value} backdrop",
    ),
    "x": (
        "move it to the {value}",
        "move it to the {value} side",
        "shift it to the {value}",
        "put it on the {value}",
        "slide the {shape} to the {value}",
    ),
    "x:center": (
        "center it horizontally",
        "move it to the horizontal center",
        "move it to the middle column",
        "shift the {shape} to the centre column",
    ),
    "y": (
        "move it to the {value}",
        "move it to the {value} edge",
        "shift it to the {value}",
        "put the {shape} at the {value}",
        "move the {shape} to the {value} row",
    ),
    "y:middle": (
        "center it vertically",
        "move it to the vertical middle",
        "move it to the middle row",
        "shift the {shape} to the middle row",
    ),
}
_EDIT_WRAPPERS = (
    "{}",
    "please {}",
    "now {}",
    "can you {}?",
    "{}, please",
    "{} and keep everything else the same",
)
# positions are named plainly in edits ("move it to the top", not "... to the upper")
_EDIT_VALUE_WORDS = {
    **SIZE_WORDS,
    **COLOR_WORDS,
    **SHAPE_WORDS,
    **BACKGROUND_WORDS,
    **{value: (value,) for value in (*X_POSITIONS, *Y_POSITIONS)},
}


def make_edit_instruction(
    source: ShapeAttributes | Mapping[str, Any] | int, attribute: str, value: str, rng: np.random.Generator
) -> str:
    """An instruction that changes `attribute` of `source` to `value` (which must differ from the current one)."""
    source = as_attributes(source)
    if attribute not in ATTRIBUTE_NAMES:
        raise ValueError(f"`attribute` must be one of {list(ATTRIBUTE_NAMES)}, got {attribute!r}")
    if value not in ATTRIBUTE_VALUES[attribute] or value == getattr(source, attribute):
        raise ValueError(
            f"`value` must be a {attribute} other than the current {getattr(source, attribute)!r}, got {value!r}"
        )
    group = f"{attribute}:{value}" if f"{attribute}:{value}" in EDIT_INSTRUCTIONS else attribute
    instruction = _pick(rng, EDIT_INSTRUCTIONS[group]).format(
        value=_pick(rng, _EDIT_VALUE_WORDS[value]), shape=_pick(rng, SHAPE_WORDS[source.shape])
    )
    instruction = _fix_articles(_pick(rng, _EDIT_WRAPPERS).format(instruction))
    return instruction[0].upper() + instruction[1:] if rng.random() < 0.5 else instruction


_GROW_WORDS = frozenset({"bigger", "larger", "enlarge", "grow", "up"})
_SHRINK_WORDS = frozenset({"smaller", "shrink", "reduce", "down"})


def parse_edit_instruction(
    text: str, source: ShapeAttributes | Mapping[str, Any] | int
) -> ShapeAttributes | None:
    """
    The combination an edit instruction asks for, given the current one; `None` when the instruction does
    not name exactly one change of one attribute.
    """
    source = as_attributes(source)
    words = _words(text)

    def changed(lexicon: Mapping[str, str], current: str) -> set[str]:
        return {lexicon[word] for word in words if word in lexicon} - {current}

    changes: list[tuple[str, str]] = []
    if "background" in words or "backdrop" in words:
        changes += [("background", value) for value in changed(_BACKGROUND_LEXICON, source.background)]
    changes += [("color", value) for value in changed(_COLOR_LEXICON, source.color)]
    changes += [("shape", value) for value in changed(_SHAPE_LEXICON, source.shape)]
    sizes = changed(_SIZE_LEXICON, source.size)
    if _GROW_WORDS.intersection(words):
        sizes.add("large")
    if _SHRINK_WORDS.intersection(words):
        sizes.add("small")
    changes += [("size", value) for value in sizes - {source.size}]
    xs = changed(_X_LEXICON, source.x)
    ys = changed(_Y_LEXICON, source.y)
    if _CENTER_LEXICON.intersection(words):
        if {"horizontally", "horizontal", "column"}.intersection(words):
            xs.add("center")
        if {"vertically", "vertical", "row"}.intersection(words):
            ys.add("middle")
    changes += [("x", value) for value in xs - {source.x}]
    changes += [("y", value) for value in ys - {source.y}]
    if len(changes) != 1:
        return None
    attribute, value = changes[0]
    return source.replace(**{attribute: value})


def neighbours(
    attributes: ShapeAttributes | Mapping[str, Any] | int,
) -> list[tuple[str, str, ShapeAttributes]]:
    """Every one-attribute edit of a combination: ``(attribute, new value, edited combination)`` (14 of them)."""
    attributes = as_attributes(attributes)
    return [
        (name, value, attributes.replace(**{name: value}))
        for name in ATTRIBUTE_NAMES
        for value in ATTRIBUTE_VALUES[name]
        if value != getattr(attributes, name)
    ]
