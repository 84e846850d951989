"""SEED-Shapes world: attributes, splits and exact rendering.

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

Texts about the world are in `seed_hf.training.shapes.texts`, dataset builders in
`seed_hf.training.shapes.records`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

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
