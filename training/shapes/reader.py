"""A pixel attribute reader for SEED-Shapes images, independent of any model.

`read_attributes(image)` reads the attributes of a SEED-Shapes image (see `seed_hf.training.shapes`) from its
pixels alone, to judge generated images (text-to-image, edits) without trusting any model. It re-derives
the world's geometry from its definition and never looks at the generator's renders. The steps:

1. the image is brought to 64x64 RGB; a 3x3 median-filtered copy (pixel noise and JPEG speckle removed, edges
   kept in place) serves for colours and segmentation, the raw pixels for the shape fit;
2. **background**: the per-channel median of the outermost pixel ring, snapped to the nearest of white,
   black and gray (`None` when farther than `MAX_BACKGROUND_DISTANCE` from all three);
3. **objects**: pixels farther than `OBJECT_DISTANCE` from the observed background colour, split into
   4-connected components; components under `MIN_OBJECT_AREA` pixels are specks and ignored;
4. the object's colour is the median of its *core* (the quarter of its pixels farthest from the background
   along the object's colour direction: blurred edges would pull a plain median towards the background);
   its *mask* is the set of pixels more than half-way from the background to that colour (the
   half-contrast contour, which a symmetric blur leaves in place);
5. **color**: the palette colour nearest to the object's colour (`None` when farther than
   `MAX_COLOR_DISTANCE`, or when under `MIN_COLOR_AGREEMENT` of the mask's interior pixels have that nearest
   palette colour, e.g. two touching shapes of different colours);
6. **shape**: each ideal shape (circle, square, apex-up triangle) is placed from the mask's area and centroid
   (diameter sqrt(4A/pi), side sqrt(A), triangle side sqrt(2A) with its centre d/6 above the centroid),
   rendered with 4x4 supersampling, blurred with each of `BLUR_SIGMAS` and scaled by least squares; the
   shape whose best version leaves the smallest fraction of the object's contrast map (raw pixels)
   unexplained wins (`None` when that fraction exceeds `MAX_SHAPE_ERROR`, or when its confidence is under
   `MIN_SHAPE_CONFIDENCE`: a blob that two shapes fit almost equally well is neither);
7. **size**: that shape's diameter, small below 21 px (half-way between 14 and 28), large from 21 px
   (`None` outside `SIZE_RANGE`);
8. **x, y**: that shape's centre snapped to 16 / 32 / 48 (`None` when more than `MAX_POSITION_OFFSET` px from
   all three).

The image is *invalid* -- every attribute `None`, the cause in `reason` -- when the border is not uniform, when
there is no object or more than one, or when the object is no compact shape (bounding-box aspect ratio
outside `ASPECT_RANGE`, fill ratio under `MIN_FILL`): the reader does not report a shape that is not there,
nor one of two shapes.

Each attribute comes with a confidence in [0, 1]: for background and colour 1 - d1 / d2 (distances to the
nearest and second-nearest palette value: 1 on a palette value, 0 half-way between two), for the shape
1 - e1 / e2 (the two smallest fit errors), for size and positions 1 - |offset from the nominal value| / 7 or 8
(the offset at which the next value is as near).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from .world import (
    ATTRIBUTE_NAMES,
    BACKGROUNDS,
    COLORS,
    IMAGE_SIZE,
    SHAPES,
    SIZES,
    X_POSITIONS,
    Y_POSITIONS,
    as_attributes,
    position_name,
)

BORDER_WIDTH = 1
MAX_BACKGROUND_DISTANCE = 100.0
MIN_UNIFORM_BORDER = 0.75
OBJECT_DISTANCE = 40.0
MIN_OBJECT_AREA = 20
MAX_COLOR_DISTANCE = 90.0
MIN_COLOR_AGREEMENT = 0.7
SIZE_THRESHOLD = 21  # half-way between the small (14) and large (28) sides
SIZE_RANGE = (7, 40)
MAX_POSITION_OFFSET = 6.0
ASPECT_RANGE = (0.6, 1 / 0.6)
MIN_FILL = 0.3
SUPERSAMPLE = 4
BLUR_SIGMAS = (0.0, 0.7, 1.4, 2.1, 2.8)
FIT_MARGIN = 5
MAX_SHAPE_ERROR = 0.2
# Under this shape confidence the shape is unreadable: the drawn rounded blobs that a person calls neither square
# nor circle scored 0.08-0.09, while every exact render scores 0.88 or more and 970 of 972 degraded renders (noise,
# blur, JPEG, colour shift) 0.15 or more (docs/shapes-composition-findings.md, section 4: the highest floor that
# costs no degraded render set more than 0.5 points of shape accuracy).
MIN_SHAPE_CONFIDENCE = 0.15
MASK_LEVEL = 0.5
CORE_FRACTION = 0.25
READ_KEYS = (*ATTRIBUTE_NAMES, "position")

_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_VALUES = np.array(list(BACKGROUNDS.values()), np.float32)
_COLOR_NAMES = tuple(COLORS)
_COLOR_VALUES = np.array(list(COLORS.values()), np.float32)


def _to_pixels(image: Any) -> np.ndarray:
    """float32 (64, 64, 3) in [0, 255] from a PIL image or an (H, W, 3|4) array (uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
        return np.asarray(image, np.float32)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"`image` array must have shape (height, width, 3 or 4), got {image.shape}")
        pixels = image[..., :3]
        if np.issubdtype(pixels.dtype, np.floating):
            pixels = np.clip(pixels, 0.0, 1.0) * 255.0
        elif pixels.dtype != np.uint8:
            raise ValueError(f"`image` array must be uint8 or float in [0, 1], got dtype {pixels.dtype}")
        if pixels.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
            return _to_pixels(Image.fromarray(np.round(pixels).astype(np.uint8), mode="RGB"))
        return pixels.astype(np.float32)
    raise TypeError(f"`image` must be a PIL.Image.Image or a numpy array, got {type(image).__name__}")


def _median_filter(pixels: np.ndarray) -> np.ndarray:
    padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    return np.median(windows.reshape(*pixels.shape, 9), axis=-1)


def _neighbour_stack(array: np.ndarray, fill) -> np.ndarray:
    """(5, H, W): the array and its 4 neighbours (up, down, left, right), `fill` beyond the edges."""
    padded = np.pad(array, 1, constant_values=fill)
    return np.stack([array, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of a boolean mask, as boolean masks, largest first."""
    height, width = mask.shape
    outside = height * width
    # every pixel starts labelled with its own flat index; labels shrink to each component's smallest index,
    # by neighbour minima and pointer jumping (a pixel takes the label of the pixel its label points at)
    labels = np.where(mask, np.arange(outside).reshape(height, width), outside)
    while True:
        smallest = np.where(mask, _neighbour_stack(labels, outside).min(axis=0), outside)
        flat = np.append(smallest.ravel(), outside)
        smallest = flat[smallest]
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    names, sizes = np.unique(labels[mask], return_counts=True)
    return [labels == names[i] for i in np.argsort(-sizes, kind="stable")]


def _nearest(value: np.ndarray, prototypes: np.ndarray) -> tuple[int, float, float]:
    """(index of the nearest prototype, its distance, confidence 1 - d1 / d2)."""
    distances = np.linalg.norm(prototypes - value, axis=-1)
    first, second = np.argsort(distances)[:2]
    return int(first), float(distances[first]), float(1.0 - distances[first] / max(distances[second], 1e-9))


def _nearest_mixed_color(pixels: np.ndarray, background_color: np.ndarray) -> np.ndarray:
    """
    Index of the palette colour nearest to each pixel, allowing blur to mix up to half of the background into
    the colour (the distance to the segment from the colour to the colour-background midpoint).
    """
    directions = _COLOR_VALUES - background_color  # (6, 3)
    offsets = pixels[:, None] - background_color  # (N, 1, 3)
    share = np.clip(np.sum(offsets * directions, axis=-1) / np.sum(directions**2, axis=-1), 0.5, 1.0)
    return np.argmin(np.linalg.norm(offsets - share[..., None] * directions, axis=-1), axis=1)


def _shape_coverage(
    shape: str, centre_x: float, centre_y: float, diameter: float, rows: np.ndarray, columns: np.ndarray
) -> np.ndarray:
    """Fraction of each pixel (rows x columns; pixel (r, c) spans [c, c + 1] x [r, r + 1]) inside the ideal shape."""
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    dy = (rows[:, None] + offsets).reshape(-1, 1) - centre_y
    dx = (columns[:, None] + offsets).reshape(1, -1) - centre_x
    half = diameter / 2
    if shape == "circle":
        inside = dx**2 + dy**2 <= half**2
    elif shape == "square":
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    else:
        depth = dy + half  # below the apex; the triangle's half-width is depth / 2
        inside = (depth >= 0) & (depth <= diameter) & (np.abs(dx) <= depth / 2)
    return inside.reshape(len(rows), SUPERSAMPLE, len(columns), SUPERSAMPLE).mean(axis=(1, 3))


def _blur_matrix(length: int, sigma: float) -> np.ndarray:
    """Gaussian blur along one axis as a (length, length) matrix (rows renormalised at the window's ends)."""
    if sigma == 0:
        return np.eye(length)
    steps = np.arange(length)
    weights = np.exp(-((steps[:, None] - steps[None, :]) ** 2) / (2 * sigma**2))
    return weights / weights.sum(axis=1, keepdims=True)


def _fit_shape(
    along: np.ndarray, mask: np.ndarray, noise_variance: float
) -> tuple[int, np.ndarray, list[tuple[float, float, float]]]:
    """
    Compare the object's contrast map with each ideal shape, blurred by the best of `BLUR_SIGMAS`, and return
    (index in `SHAPES` of the best, the three errors, the three placements (centre x, centre y, diameter)).
    An error is the fraction of the map's energy the shape leaves unexplained, both net of the pixel noise
    (`noise_variance` per pixel), so that it does not grow with the noise. Each shape is placed by the area
    and centroid of the object's mask, which blur barely moves (unlike its bounding box: blur eats the
    triangle's thin apex and corners).
    """
    rows, columns = np.nonzero(mask)
    area, centroid_x, centroid_y = len(rows), columns.mean() + 0.5, rows.mean() + 0.5
    circle_diameter, square_side, triangle_side = np.sqrt(4 * area / np.pi), np.sqrt(area), np.sqrt(2 * area)
    # a triangle's centroid lies d / 6 below its centre (2/3 of the height down from the apex)
    placements = [
        (centroid_x, centroid_y, circle_diameter),
        (centroid_x, centroid_y, square_side),
        (centroid_x, centroid_y - triangle_side / 6, triangle_side),
    ]
    margin = FIT_MARGIN + int(np.ceil(triangle_side / 2))
    rows = np.arange(max(0, int(centroid_y) - margin), min(IMAGE_SIZE, int(centroid_y) + margin + 1))
    columns = np.arange(max(0, int(centroid_x) - margin), min(IMAGE_SIZE, int(centroid_x) + margin + 1))
    target = np.clip(along[np.ix_(rows, columns)], -0.5, 1.5)
    noise_energy = target.size * noise_variance
    signal_energy = max(float(np.sum(target**2)) - noise_energy, 1e-9)
    blurs = [(_blur_matrix(len(rows), sigma), _blur_matrix(len(columns), sigma)) for sigma in BLUR_SIGMAS]
    errors = []
    for shape, placement in zip(SHAPES, placements, strict=True):
        coverage = _shape_coverage(shape, *placement, rows, columns)
        shape_errors = []
        for by, bx in blurs:
            template = by @ coverage @ bx.T
            # least-squares contrast of the template: the object's colour estimate need not be exact
            scale = max(float(np.sum(template * target) / np.sum(template * template)), 0.0)
            residual = float(np.sum((scale * template - target) ** 2)) - noise_energy
            shape_errors.append(max(residual, 0.0) / signal_energy)
        errors.append(min(shape_errors))
    return int(np.argmin(errors)), np.array(errors), placements


def _snap(value: float, grid: Mapping[str, int]) -> tuple[str | None, float]:
    names = list(grid)
    offsets = np.abs(np.array(list(grid.values()), np.float64) - value)
    nearest = int(np.argmin(offsets))
    if offsets[nearest] > MAX_POSITION_OFFSET:
        return None, 0.0
    return names[nearest], float(1.0 - offsets[nearest] / 8.0)


def invalid_reading(reason: str) -> dict[str, Any]:
    """The reading of an image that shows no single readable shape (also for an image that is missing)."""
    return {
        "valid": False,
        "reason": reason,
        **dict.fromkeys(READ_KEYS),
        "confidence": dict.fromkeys(READ_KEYS),
    }


def read_attributes(image: Any) -> dict[str, Any]:
    """
    Read the attributes of a SEED-Shapes image from its pixels (see the module docstring for the method).

    Args:
        image: a PIL image or an (H, W, 3) array (uint8, or float in [0, 1]); other sizes are resized to 64x64.

    Returns:
        `{"valid": bool, "reason": str | None, "background", "shape", "size", "color", "x", "y", "position",
        "confidence": {attribute: float | None}}`. An attribute is `None` when unreadable; an invalid image
        (no shape, several shapes, no compact shape) has every attribute `None` and says why in `reason`.
    """
    raw_pixels = _to_pixels(image)
    pixels = _median_filter(raw_pixels)
    border = np.ones(pixels.shape[:2], bool)
    border[BORDER_WIDTH:-BORDER_WIDTH, BORDER_WIDTH:-BORDER_WIDTH] = False
    background_color = np.median(pixels[border], axis=0)

    background_distance = np.linalg.norm(pixels - background_color, axis=-1)
    if np.mean(background_distance[border] <= OBJECT_DISTANCE) < MIN_UNIFORM_BORDER:
        return invalid_reading("no uniform background")
    objects = [
        component
        for component in _components(background_distance > OBJECT_DISTANCE)
        if component.sum() >= MIN_OBJECT_AREA
    ]
    if not objects:
        return invalid_reading("no shape")
    if len(objects) > 1:
        return invalid_reading(f"{len(objects)} separate shapes")
    region = objects[0]

    # the object's colour: median of its core, the quarter of its pixels farthest along the object-minus-
    # background direction (blurred edges pull a plain median towards the background on small shapes)
    contrast = np.median(pixels[region], axis=0) - background_color
    along = (pixels - background_color) @ contrast
    core = region & (along >= np.quantile(along[region], 1 - CORE_FRACTION))
    core_pixels = pixels[core]
    contrast = np.median(core_pixels, axis=0) - background_color
    if float(contrast @ contrast) < OBJECT_DISTANCE**2:
        return invalid_reading("no object colour distinct from the background")
    along = (pixels - background_color) @ contrast / float(contrast @ contrast)
    grown_region = _neighbour_stack(region, False).any(axis=0)
    mask = _components((along > MASK_LEVEL) & grown_region)[0]
    rows, columns = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    height, width = bottom - top, right - left
    fill = mask.sum() / (height * width)
    if not (ASPECT_RANGE[0] <= width / height <= ASPECT_RANGE[1]) or fill < MIN_FILL:
        return invalid_reading(f"not a single compact shape (bounding box {width}x{height}, fill {fill:.2f})")

    reading: dict[str, Any] = {"valid": True, "reason": None}
    confidence: dict[str, float | None] = {}

    index, distance, confidence["background"] = _nearest(background_color, _BACKGROUND_VALUES)
    reading["background"] = _BACKGROUND_NAMES[index] if distance <= MAX_BACKGROUND_DISTANCE else None

    index, distance, confidence["color"] = _nearest(background_color + contrast, _COLOR_VALUES)
    interior = _neighbour_stack(mask, False).all(axis=0)
    interior_pixels = pixels[interior] if interior.any() else pixels[mask]
    per_pixel = _nearest_mixed_color(interior_pixels, background_color)
    agreement = float(np.mean(per_pixel == index))
    readable = distance <= MAX_COLOR_DISTANCE and agreement >= MIN_COLOR_AGREEMENT
    reading["color"] = _COLOR_NAMES[index] if readable else None

    raw_along = (raw_pixels - background_color) @ contrast / float(contrast @ contrast)
    # pixel noise from the border's median absolute deviation (robust to a shape reaching the border)
    border_along = raw_along[border]
    noise_variance = float((1.4826 * np.median(np.abs(border_along - np.median(border_along)))) ** 2)
    index, errors, placements = _fit_shape(raw_along, mask, noise_variance)
    second = np.partition(errors, 1)[1]
    confidence["shape"] = float(1.0 - errors[index] / max(second, 1e-9))
    readable = errors[index] <= MAX_SHAPE_ERROR and confidence["shape"] >= MIN_SHAPE_CONFIDENCE
    reading["shape"] = SHAPES[index] if readable else None
    centre_x, centre_y, diameter = placements[index]

    size = (
        ("small" if diameter < SIZE_THRESHOLD else "large")
        if SIZE_RANGE[0] <= diameter <= SIZE_RANGE[1]
        else None
    )
    reading["size"] = size
    confidence["size"] = float(max(0.0, 1.0 - abs(diameter - SIZES[size]) / 7.0)) if size else 0.0

    reading["x"], confidence["x"] = _snap(centre_x, X_POSITIONS)
    reading["y"], confidence["y"] = _snap(centre_y, Y_POSITIONS)
    both = reading["x"] is not None and reading["y"] is not None
    reading["position"] = position_name(reading["x"], reading["y"]) if both else None
    confidence["position"] = min(confidence["x"], confidence["y"])
    reading["confidence"] = {key: confidence[key] for key in READ_KEYS}
    return {key: reading[key] for key in ("valid", "reason", *READ_KEYS, "confidence")}


def attribute_accuracy(images_or_readings: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
    """
    Per-attribute and all-attribute accuracy of images against the combinations they should show.

    Args:
        images_or_readings: images (read with `read_attributes`) or readings already made.
        targets: the intended combinations (`ShapeAttributes`, attribute mappings or combination indices).

    Returns:
        `{"background", "shape", "size", "color", "x", "y", "position", "all", "valid": float, "count": int}`:
        the fraction of images whose reading matches the target (an unreadable attribute counts as wrong;
        "position" needs x and y right, "all" needs all six), and the fraction of valid images.
    """
    if len(images_or_readings) != len(targets):
        raise ValueError(
            f"`images_or_readings` and `targets` must have the same length, got {len(images_or_readings)} and {len(targets)}"
        )
    readings = [
        item if isinstance(item, Mapping) and "valid" in item else read_attributes(item)
        for item in images_or_readings
    ]
    targets = [as_attributes(target) for target in targets]
    scores = {key: [] for key in (*READ_KEYS, "all")}
    for reading, target in zip(readings, targets, strict=True):
        for key in READ_KEYS:
            scores[key].append(reading[key] == getattr(target, key))
        scores["all"].append(all(reading[name] == getattr(target, name) for name in ATTRIBUTE_NAMES))
    count = len(readings)
    result = {key: float(np.mean(values)) if count else 0.0 for key, values in scores.items()}
    result["valid"] = float(np.mean([reading["valid"] for reading in readings])) if count else 0.0
    result["count"] = count
    return result


def degrade(
    image: Image.Image,
    rng: np.random.Generator,
    noise_std: float = 20.0,
    blur_radius: float = 0.0,
    jpeg_quality: int | None = None,
    color_shift: float = 0.0,
) -> Image.Image:
    """
    Degrade an image the way a small decoder's output is degraded, to test the reader: Gaussian blur of
    `blur_radius`, a per-channel colour offset drawn uniformly in [-`color_shift`, `color_shift`], Gaussian
    pixel noise of standard deviation `noise_std` (in 0..255 units), then JPEG compression at `jpeg_quality`.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"`image` must be a PIL.Image.Image, got {type(image).__name__}")
    image = image.convert("RGB")
    if blur_radius > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur_radius))
    pixels = np.asarray(image, np.float64) + rng.uniform(-color_shift, color_shift, size=3)
    pixels = pixels + rng.normal(0.0, noise_std, size=pixels.shape)
    image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), mode="RGB")
    if jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=jpeg_quality)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


__all__ = ["attribute_accuracy", "degrade", "invalid_reading", "read_attributes"]
