"""SEED-Shapes: a small synthetic world for training and judging a whole SEED stack on a CPU.

**The world.** A 64x64 RGB image holds exactly one filled shape on a plain background. Six attributes, 972
combinations (3 x 3 x 2 x 6 x 3 x 3):

=============  ==================================================================================
background     white (255, 255, 255), black (0, 0, 0), gray (128, 128, 128)
shape          circle (diameter d), square (side d, axis-aligned), triangle (isosceles, apex up,
               base d, height d)
size           small (d = 14), large (d = 28)
color          red (220, 40, 40), green (40, 180, 60), blue (40, 80, 220), yellow (240, 210, 40),
               purple (150, 60, 200), orange (250, 140, 30)
x              left / center / right: centre x = 16 / 32 / 48
y              top / middle / bottom: centre y = 16 / 32 / 48
=============  ==================================================================================

"Position" is the pair (x, y); its canonical names are those of a 3x3 grid: ``top left``, ``top center``,
``top right``, ``middle left``, ``center``, ``middle right``, ``bottom left``, ``bottom center``,
``bottom right``.

**Rendering** (:func:`render`) is exact and free of anti-aliasing: pixel (row r, column c) has its centre at
(c + 0.5, r + 0.5) and takes the shape colour iff that point lies in the closed shape (the circle of
diameter d, the square of side d, the triangle with apex (cx, cy - d/2) and base corners
(cx - d/2, cy + d/2) and (cx + d/2, cy + d/2), all centred on (cx, cy)). A combination therefore has
exactly one image.

**Splits.** The *unseen* combinations are the 97 (10 % of 972, rounded) whose key
``"background/shape/size/color/x/y"`` (e.g. ``"white/circle/small/red/left/top"``) has the smallest SHA-256
hex digest: a fixed set, the same on every platform and version, that anyone can recompute. They never
appear in ``train``. The other 875 are the *seen* combinations. Datasets come in three splits:

- ``train``: seen combinations;
- ``test_seen``: held-out samples of the seen combinations. As a combination has a single rendering,
  samples of one combination differ in their text only (caption, question, instruction, dialogue). Every
  record has a key (its combination indices and its text); a record belongs to ``test_seen`` iff the
  SHA-256 of its key falls in bucket 0 of 10, and ``train`` only draws records outside bucket 0. So no
  ``test_seen`` record (same images, same text) ever occurs in ``train``: a ``test_seen`` caption is a
  phrasing the model never read for that combination;
- ``test_unseen``: the unseen combinations (in edit pairs and dialogues: the final image is unseen and every
  earlier one is seen, so the task is to *produce* a combination never trained on).

**Sampling.** Sample ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, kind, i])``, so
it does not depend on the number of samples asked for (a shorter dataset is a prefix of a longer one), nor on
the process (no Python ``hash``); numpy's PCG64 streams are the same on every platform. The combination of
sample ``i`` is ``order[i % n]``, where ``order`` is the split's ``n`` combinations sorted by a seed-dependent
SHA-256: every combination is used equally often (``num_samples=None`` gives each exactly once). Each
combination has thousands of distinct caption phrasings.

**Text.** Captions (:func:`make_caption`) come from templates with synonyms (e.g. "a large red circle on a
white background in the top left corner", "Top-left: big red disc over white") and always name all five
attributes; :func:`parse_caption` reads them back (and reasonable free text). Position conventions: a
single named side means the middle of that side ("on the left" = middle left, "at the top" = top center);
edit instructions that move the shape name an absolute target ("move it to the left" = to the left column,
keeping the row). VQA answers are canonical short strings (attribute values, or the position name).

**Builders** return `datasets.Dataset` objects with `datasets.Image` columns (PNG) and one string column
per attribute: :func:`caption_dataset`, :func:`vqa_dataset`, :func:`edit_dataset`, :func:`dialogue_dataset`
(chat records in the ``messages`` / ``images`` layout of `seed_hf.training.data`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

IMAGE_SIZE = 64
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 14, "large": 28}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
}
X_POSITIONS: dict[str, int] = {"left": 16, "center": 32, "right": 48}
Y_POSITIONS: dict[str, int] = {"top": 16, "middle": 32, "bottom": 48}
ATTRIBUTE_NAMES: tuple[str, ...] = ("background", "shape", "size", "color", "x", "y")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "background": tuple(BACKGROUNDS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "color": tuple(COLORS),
    "x": tuple(X_POSITIONS),
    "y": tuple(Y_POSITIONS),
}
NUM_COMBINATIONS = int(np.prod([len(values) for values in ATTRIBUTE_VALUES.values()]))
NUM_UNSEEN = round(0.1 * NUM_COMBINATIONS)
SPLITS: tuple[str, ...] = ("train", "test_seen", "test_unseen")
# number of hash buckets of records; bucket 0 is test_seen's
_RECORD_BUCKETS = 10
# a test_seen record is found by redrawing the text; this bounds the redraws (expected: 10)
_MAX_REDRAWS = 1000
_PROGRESS_MIN_ROWS = 5000


def position_name(x: str, y: str) -> str:
    """Canonical name of a grid position: ``"top left"``, ``"top center"``, ..., ``"center"``, ..."""
    if (x, y) == ("center", "middle"):
        return "center"
    return f"{y} {x}"


@dataclasses.dataclass(frozen=True)
class ShapeAttributes:
    """The six attributes of a SEED-Shapes image (see the module docstring for the values)."""

    background: str
    shape: str
    size: str
    color: str
    x: str
    y: str

    def __post_init__(self):
        for name in ATTRIBUTE_NAMES:
            value = getattr(self, name)
            if value not in ATTRIBUTE_VALUES[name]:
                raise ValueError(f"`{name}` must be one of {list(ATTRIBUTE_VALUES[name])}, got {value!r}")

    @property
    def index(self) -> int:
        """Combination index in [0, 972): mixed radix over `ATTRIBUTE_NAMES`, background most significant."""
        index = 0
        for name in ATTRIBUTE_NAMES:
            values = ATTRIBUTE_VALUES[name]
            index = index * len(values) + values.index(getattr(self, name))
        return index

    @classmethod
    def from_index(cls, index: int) -> ShapeAttributes:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < NUM_COMBINATIONS:
            raise ValueError(f"`index` must be an int in [0, {NUM_COMBINATIONS}), got {index!r}")
        index = int(index)
        values = {}
        for name in reversed(ATTRIBUTE_NAMES):
            index, digit = divmod(index, len(ATTRIBUTE_VALUES[name]))
            values[name] = ATTRIBUTE_VALUES[name][digit]
        return cls(**values)

    @property
    def key(self) -> str:
        """``"background/shape/size/color/x/y"``, e.g. ``"white/circle/small/red/left/top"``."""
        return "/".join(getattr(self, name) for name in ATTRIBUTE_NAMES)

    @property
    def position(self) -> str:
        return position_name(self.x, self.y)

    def to_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTE_NAMES}

    def replace(self, **changes: str) -> ShapeAttributes:
        return dataclasses.replace(self, **changes)


def as_attributes(attributes: ShapeAttributes | Mapping[str, Any] | int) -> ShapeAttributes:
    """A `ShapeAttributes` from itself, a mapping with (at least) the six attribute keys, or an index."""
    if isinstance(attributes, ShapeAttributes):
        return attributes
    if isinstance(attributes, (int, np.integer)):
        return ShapeAttributes.from_index(attributes)
    if isinstance(attributes, Mapping):
        missing = [name for name in ATTRIBUTE_NAMES if name not in attributes]
        if missing:
            raise ValueError(f"`attributes` lacks the keys {missing}; it needs {list(ATTRIBUTE_NAMES)}")
        return ShapeAttributes(**{name: attributes[name] for name in ATTRIBUTE_NAMES})
    raise TypeError(
        f"`attributes` must be a ShapeAttributes, a mapping of attribute values or an int, got {type(attributes).__name__}"
    )


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@functools.cache
def unseen_combinations() -> tuple[int, ...]:
    """Indices (sorted) of the 97 combinations held out of training: smallest SHA-256 of their key."""
    by_digest = sorted(
        range(NUM_COMBINATIONS),
        key=lambda index: hashlib.sha256(ShapeAttributes.from_index(index).key.encode()).hexdigest(),
    )
    return tuple(sorted(by_digest[:NUM_UNSEEN]))


@functools.cache
def seen_combinations() -> tuple[int, ...]:
    unseen = set(unseen_combinations())
    return tuple(index for index in range(NUM_COMBINATIONS) if index not in unseen)


def split_combinations(split: str) -> tuple[int, ...]:
    """Combination indices a split draws from (``test_seen`` shares ``train``'s)."""
    _check_split(split)
    return unseen_combinations() if split == "test_unseen" else seen_combinations()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}")


# ---------------------------------------------------------------------------------------------------------
# rendering


@functools.cache
def _pixel_centres() -> np.ndarray:
    return np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5


def shape_mask(shape: str, size: str, x: str, y: str) -> np.ndarray:
    """Boolean (64, 64) mask of the pixels whose centre lies in the closed shape."""
    for name, value in (("shape", shape), ("size", size), ("x", x), ("y", y)):
        if value not in ATTRIBUTE_VALUES[name]:
            raise ValueError(f"`{name}` must be one of {list(ATTRIBUTE_VALUES[name])}, got {value!r}")
    centres = _pixel_centres()
    dx = centres[None, :] - X_POSITIONS[x]
    dy = centres[:, None] - Y_POSITIONS[y]
    half = SIZES[size] / 2
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    depth = dy + half  # distance below the apex; the half-width grows as depth / 2 (base d at depth d)
    return (depth >= 0) & (depth <= 2 * half) & (np.abs(dx) <= depth / 2)


@functools.cache
def _render_index(index: int) -> np.ndarray:
    attributes = ShapeAttributes.from_index(index)
    mask = shape_mask(attributes.shape, attributes.size, attributes.x, attributes.y)
    pixels = np.where(
        mask[..., None],
        np.array(COLORS[attributes.color], np.uint8),
        np.array(BACKGROUNDS[attributes.background], np.uint8),
    )
    pixels.flags.writeable = False
    return pixels


def render_array(attributes: ShapeAttributes | Mapping[str, Any] | int) -> np.ndarray:
    """The (64, 64, 3) uint8 image of a combination (a read-only array shared between calls)."""
    return _render_index(as_attributes(attributes).index)


def render(attributes: ShapeAttributes | Mapping[str, Any] | int) -> Image.Image:
    """The 64x64 RGB image of a combination."""
    return Image.fromarray(np.array(render_array(attributes)), mode="RGB")


@functools.cache
def _png_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    render(index).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_cell(index: int) -> dict[str, Any]:
    """Value of a `datasets.Image` column: the combination's PNG (each combination is encoded once)."""
    return {"bytes": _png_bytes(index), "path": None}


# ---------------------------------------------------------------------------------------------------------
# vocabulary shared by the text generators and the parsers

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


# ---------------------------------------------------------------------------------------------------------
# record sampling

_SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}
_KIND_CODES = {"caption": 0, "vqa": 1, "edit": 2, "dialogue": 3}


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
]
