"""The measures of `seed-hf probe-shapes` (`probe.py`) that need no model: linear probes, code-sequence
neighbourhoods, breakdowns of attribute readings, and the shape-confidence rule proposed for the reader.

Every function takes plain arrays (features, codes, combination indices, readings of
`seed_hf.training.shapes.reader.read_attributes`), so each can be checked on constructed cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .reader import attribute_accuracy
from .world import ATTRIBUTE_NAMES, ATTRIBUTE_VALUES, NUM_COMBINATIONS, ShapeAttributes

# L2 penalty (on the mean cross-entropy) of the linear probes, and their L-BFGS iteration budget
PROBE_WEIGHT_DECAY = 1e-3
PROBE_ITERATIONS = 200


def attribute_labels(indices: Sequence[int]) -> np.ndarray:
    """`[N, 6]` int: the value index of each attribute (`ATTRIBUTE_NAMES` order) of each combination."""
    rows = []
    for index in indices:
        attributes = ShapeAttributes.from_index(int(index))
        rows.append([ATTRIBUTE_VALUES[name].index(getattr(attributes, name)) for name in ATTRIBUTE_NAMES])
    return np.array(rows, dtype=np.int64).reshape(-1, len(ATTRIBUTE_NAMES))


def linear_probe_predictions(
    train_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray,
    test_features: np.ndarray | torch.Tensor,
    num_classes: int,
    weight_decay: float = PROBE_WEIGHT_DECAY,
    max_iterations: int = PROBE_ITERATIONS,
) -> np.ndarray:
    """
    Fit a multinomial logistic regression (features standardised on the training rows, weights started at zero,
    L2 penalty `weight_decay` on the weights, full-batch L-BFGS) and return its predicted classes of `test_features`.

    Weights start at zero and a feature constant over the training rows gets no gradient, so a feature that
    only varies on test rows (a code never used at that position in training) cannot move a prediction.
    """
    train = torch.as_tensor(np.asarray(train_features), dtype=torch.float32).flatten(1)
    test = torch.as_tensor(np.asarray(test_features), dtype=torch.float32).flatten(1)
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if train.shape[0] != labels.shape[0] or train.shape[0] == 0:
        raise ValueError(
            f"`train_features` and `train_labels` must have the same non-zero number of rows, got "
            f"{train.shape[0]} and {labels.shape[0]}"
        )
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"`train_features` and `test_features` must have the same width, got {train.shape[1]} and {test.shape[1]}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"`train_labels` must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    mean, std = train.mean(0), train.std(0, unbiased=False).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    weight = torch.zeros(train.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-6
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train @ weight + bias, labels)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (test @ weight + bias).argmax(1).numpy()


def _probe_correct(
    features: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, test_rows: np.ndarray
) -> np.ndarray:
    """`[len(test_rows), 6]` bool: whether each attribute's probe gets each test row right."""
    columns = []
    for column, name in enumerate(ATTRIBUTE_NAMES):
        predicted = linear_probe_predictions(
            features[train_rows], labels[train_rows, column], features[test_rows], len(ATTRIBUTE_VALUES[name])
        )
        columns.append(predicted == labels[test_rows, column])
    return np.stack(columns, axis=1)


def _summary(correct: np.ndarray) -> dict[str, float]:
    result = {name: float(correct[:, column].mean()) for column, name in enumerate(ATTRIBUTE_NAMES)}
    result["all"] = float(correct.all(1).mean())
    result["count"] = len(correct)
    return result


def probe_attributes(
    features: np.ndarray | torch.Tensor, indices: Sequence[int], train_rows: np.ndarray, test_rows: np.ndarray
) -> dict[str, float]:
    """Accuracy of one linear probe per attribute, trained on `features[train_rows]` and scored on
    `features[test_rows]` (row r shows combination `indices[r]`), the rate of test rows with all six right
    (`all`) and the number of test rows (`count`)."""
    features = np.asarray(features)
    return _summary(
        _probe_correct(features, attribute_labels(indices), np.asarray(train_rows), np.asarray(test_rows))
    )


def cross_validated_probe(
    features: np.ndarray | torch.Tensor, indices: Sequence[int], rows: np.ndarray, num_folds: int, seed: int
) -> dict[str, float]:
    """As `probe_attributes`, scored on every one of `rows` once: `rows` are shuffled (by `seed`) into
    `num_folds` folds and each fold is predicted by probes trained on the other folds."""
    rows = np.asarray(rows)
    if not 2 <= num_folds <= len(rows):
        raise ValueError(f"`num_folds` must lie in [2, {len(rows)}] (the number of rows), got {num_folds!r}")
    features, labels = np.asarray(features), attribute_labels(indices)
    folds = np.array_split(np.random.default_rng(seed).permutation(rows), num_folds)
    correct = [
        _probe_correct(features, labels, np.concatenate(folds[:k] + folds[k + 1 :]), fold)
        for k, fold in enumerate(folds)
    ]
    return _summary(np.concatenate(correct))


def one_hot_codes(codes: np.ndarray | torch.Tensor, num_codes: int) -> np.ndarray:
    """`[N, P]` codes -> `[N, P * num_codes]` float32 one-hot features (one block per position)."""
    codes = np.asarray(codes)
    features = np.zeros((codes.shape[0], codes.shape[1], num_codes), np.float32)
    np.put_along_axis(features, codes[..., None], 1.0, axis=-1)
    return features.reshape(codes.shape[0], -1)


def hamming_distances(first: np.ndarray | torch.Tensor, second: np.ndarray | torch.Tensor) -> np.ndarray:
    """`[N, M]` int: the number of positions at which row n of `first` and row m of `second` differ."""
    first, second = np.asarray(first), np.asarray(second)
    if first.ndim != 2 or second.ndim != 2 or first.shape[1] != second.shape[1]:
        raise ValueError(
            f"`first` and `second` must be [rows, positions] with the same positions, got {first.shape} and "
            f"{second.shape}"
        )
    return (first[:, None, :] != second[None, :, :]).sum(-1)


def shared_attributes(first: Sequence[int], second: Sequence[int]) -> np.ndarray:
    """`[N, M]` int: the number of attributes (of six) combination n of `first` shares with combination m of
    `second`."""
    return (attribute_labels(first)[:, None, :] == attribute_labels(second)[None, :, :]).sum(-1)


def _histogram(values: Sequence[int], size: int) -> list[int]:
    return np.bincount(np.asarray(values, dtype=np.int64), minlength=size)[:size].tolist()


def code_neighbourhood(
    query_codes: np.ndarray | torch.Tensor,
    query_indices: Sequence[int],
    gallery_codes: np.ndarray | torch.Tensor,
    gallery_indices: Sequence[int],
    exclude_same_combination: bool = False,
) -> dict[str, Any]:
    """
    How each query code sequence relates to a gallery of sequences (the seen images' codes).

    Returns:
        `collisions` (queries whose sequence equals some gallery sequence) and `collision_pairs` (query
        combination, gallery combination) of the first ten; `mean_nearest_overlap` (fraction of positions equal
        to the nearest gallery sequence, ties to the first) and `nearest_overlap_by_position` (per position, the
        rate of queries whose code there equals the nearest sequence's); `nearest_shared_attributes` (histogram
        over 0..6 of the attributes the query shares with its nearest gallery combination);
        `one_attribute_overlap` (per attribute: the mean overlap with the gallery sequences whose combination
        differs from the query's in that attribute only, and how many such pairs there are); `nearest`
        (per query: the nearest gallery combination and the number of positions that differ).
        With `exclude_same_combination`, a query is never compared with its own combination (a gallery of the
        queries themselves).
    """
    query_codes, gallery_codes = np.asarray(query_codes), np.asarray(gallery_codes)
    query_indices, gallery_indices = np.asarray(query_indices), np.asarray(gallery_indices)
    if len(query_codes) != len(query_indices) or len(gallery_codes) != len(gallery_indices):
        raise ValueError(
            "every code sequence needs its combination index (`*_codes` and `*_indices` lengths differ)"
        )
    positions = query_codes.shape[1]
    distances = hamming_distances(query_codes, gallery_codes)
    if exclude_same_combination:
        distances = np.where(query_indices[:, None] == gallery_indices[None, :], positions + 1, distances)
    nearest = distances.argmin(1)
    nearest_distance = distances[np.arange(len(nearest)), nearest]
    collided = np.flatnonzero(nearest_distance == 0)
    differs = attribute_labels(query_indices)[:, None, :] != attribute_labels(gallery_indices)[None, :, :]
    one_attribute = differs.sum(-1) == 1
    overlap = 1.0 - distances / positions
    one_attribute_overlap = {}
    for column, name in enumerate(ATTRIBUTE_NAMES):
        pairs = one_attribute & differs[..., column]
        one_attribute_overlap[name] = {
            "mean": float(overlap[pairs].mean()) if pairs.any() else None,
            "pairs": int(pairs.sum()),
        }
    shared = shared_attributes(query_indices, gallery_indices)[np.arange(len(nearest)), nearest]
    return {
        "queries": len(query_indices),
        "collisions": len(collided),
        "collision_pairs": [
            [int(query_indices[row]), int(gallery_indices[nearest[row]])] for row in collided[:10]
        ],
        "mean_nearest_overlap": float(np.mean(1.0 - nearest_distance / positions)),
        "nearest_overlap_by_position": (query_codes == gallery_codes[nearest]).mean(0).round(4).tolist(),
        "nearest_shared_attributes": _histogram(shared, len(ATTRIBUTE_NAMES) + 1),
        "one_attribute_overlap": one_attribute_overlap,
        "nearest": [
            {"combination": int(gallery_indices[n]), "distance": int(d)}
            for n, d in zip(nearest, nearest_distance, strict=True)
        ],
    }


def assembled_codes(codes: np.ndarray | torch.Tensor, seen_indices: Sequence[int]) -> np.ndarray:
    """
    `[972, P]`: for every combination, the code sequence assembled from the seen images' codes as if codes were
    attribute-wise -- at each position, the code the seen images with the same value of that position's attribute
    (its query group, `query_attribute_groups`, the tokenizer's attribute term's) hold most often. `codes` is
    `[972, P]`, row i for combination i. A sequence equal to an unseen image's true codes is one a learner that
    composes codes attribute by attribute (e.g. an LLM from a caption) could write without having seen it.
    """
    from ..tokenizer_models import query_attribute_groups

    codes, seen_indices = np.asarray(codes), np.asarray(seen_indices)
    labels = attribute_labels(np.arange(len(codes)))
    groups = query_attribute_groups(codes.shape[1], len(ATTRIBUTE_NAMES)).numpy()
    assembled = np.zeros_like(codes)
    for position, attribute in enumerate(groups):
        for value in np.unique(labels[:, attribute]):
            holders = seen_indices[labels[seen_indices, attribute] == value]
            found, counts = np.unique(codes[holders, position], return_counts=True)
            assembled[labels[:, attribute] == value, position] = found[counts.argmax()]
    return assembled


def _code_value_counts(codes: np.ndarray, values: np.ndarray, num_codes: int = 0) -> np.ndarray:
    """`counts[code, value]`: how many of the rows hold `code` (`codes`, one position) and have `value`; at least
    `num_codes` rows."""
    counts = np.zeros((max(codes.max() + 1, num_codes), values.max() + 1), dtype=np.int64)
    np.add.at(counts, (codes, values), 1)
    return counts


def code_purity(codes: np.ndarray | torch.Tensor, seen_indices: Sequence[int]) -> dict[str, dict[str, float]]:
    """
    How attribute-wise the seen images' codes are, per attribute, over the positions of its query group
    (`query_attribute_groups`): `purity`, the share of (image, position) pairs whose code is held mostly by images
    with the same value of the attribute, and `codes_per_value`, the mean number of distinct codes a position gives
    the images that share a value. Attribute-wise codes score 1 and 1; a code per image scores 1 and the number of
    images per value, so the two are read together. `codes` is `[972, P]`, row i for combination i.
    """
    from ..tokenizer_models import query_attribute_groups

    codes, seen_indices = np.asarray(codes)[seen_indices], np.asarray(seen_indices)
    labels = attribute_labels(seen_indices)
    groups = query_attribute_groups(codes.shape[1], len(ATTRIBUTE_NAMES)).numpy()
    pure = np.zeros(codes.shape, dtype=bool)
    codes_per_value = np.zeros(codes.shape[1])
    for position, attribute in enumerate(groups):
        column, values = codes[:, position], labels[:, attribute]
        counts = _code_value_counts(column, values)
        pure[:, position] = counts.argmax(1)[column] == values
        codes_per_value[position] = (counts[:, np.unique(values)] > 0).sum(0).mean()
    return {
        name: {
            "purity": float(pure[:, groups == attribute].mean()),
            "codes_per_value": float(codes_per_value[groups == attribute].mean()),
        }
        for attribute, name in enumerate(ATTRIBUTE_NAMES)
    }


def attributes_read_from_codes(
    drawn_codes: np.ndarray | torch.Tensor, codes: np.ndarray | torch.Tensor, seen_indices: Sequence[int]
) -> np.ndarray:
    """
    `[N, 6]` attribute values (`attribute_labels` columns) read from code sequences `drawn_codes` `[N, P]` (e.g.
    an LLM's, for captions), as attribute-wise codes would be read: at each position of an attribute's query group
    (`query_attribute_groups`), a code stands for the value most of the seen images holding it there have (in
    `codes`, `[972, P]`, row i for combination i), and the attribute is the value most of its positions stand for;
    -1 where none of its positions holds a code a seen image holds there.
    """
    from ..tokenizer_models import query_attribute_groups

    drawn_codes, seen_codes = np.asarray(drawn_codes), np.asarray(codes)[seen_indices]
    labels = attribute_labels(np.asarray(seen_indices))
    groups = query_attribute_groups(seen_codes.shape[1], len(ATTRIBUTE_NAMES)).numpy()
    num_values = [len(ATTRIBUTE_VALUES[name]) for name in ATTRIBUTE_NAMES]
    # votes[n, attribute, value]: how many of the attribute's positions stand for `value` in drawn sequence n
    votes = np.zeros((len(drawn_codes), len(ATTRIBUTE_NAMES), max(num_values)), dtype=np.int64)
    rows = np.arange(len(drawn_codes))
    for position, attribute in enumerate(groups):
        drawn = drawn_codes[:, position]
        counts = _code_value_counts(seen_codes[:, position], labels[:, attribute], drawn.max() + 1)
        held = counts[drawn].any(1)
        np.add.at(votes, (rows[held], attribute, counts[drawn[held]].argmax(1)), 1)
    return np.where(votes.any(2), votes.argmax(2), -1)


def oracle_attribute_codes(num_positions: int) -> np.ndarray:
    """`[972, num_positions]`: perfectly attribute-wise codes -- at each position (its query group,
    `query_attribute_groups`), a code for the value of that group's attribute alone, distinct across attributes
    (background values 0-2, shape values 3-5, ...; 20 codes in all)."""
    from ..tokenizer_models import query_attribute_groups

    groups = query_attribute_groups(num_positions, len(ATTRIBUTE_NAMES)).numpy()
    offsets = np.cumsum([0] + [len(ATTRIBUTE_VALUES[name]) for name in ATTRIBUTE_NAMES])[:-1]
    return offsets[groups] + attribute_labels(np.arange(NUM_COMBINATIONS))[:, groups]


def embedding_agreement(
    embeddings: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, rows: Sequence[int]
) -> dict[str, float]:
    """How well `embeddings` `[972, D]` (row i: combination i) match `targets` (the teacher's image embeddings)
    on `rows`: [`agreement_with_targets`] of those rows."""
    return agreement_with_targets(np.asarray(embeddings)[np.asarray(rows)], targets, rows)


def agreement_with_targets(
    embeddings: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, combinations: Sequence[int]
) -> dict[str, float]:
    """How well `embeddings` `[N, D]`, one for each of `combinations`, match `targets` `[972, D]` (the teacher's
    image embeddings, row i: combination i): the mean cosine to their own combination's, and the rate whose most
    similar target (of all 972) is their own."""
    embeddings = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings)).float(), dim=-1)
    targets = torch.nn.functional.normalize(torch.as_tensor(np.asarray(targets)).float(), dim=-1)
    combinations = torch.as_tensor(np.asarray(combinations))
    similarity = embeddings @ targets.t()
    return {
        "mean_cosine": float(similarity.gather(1, combinations[:, None]).mean()),
        "nearest_is_own": float((similarity.argmax(1) == combinations).float().mean()),
    }


def reading_combination(reading: Mapping[str, Any]) -> int | None:
    """The combination a reading names, or `None` when an attribute is unreadable."""
    if any(reading.get(name) is None for name in ATTRIBUTE_NAMES):
        return None
    return ShapeAttributes(**{name: reading[name] for name in ATTRIBUTE_NAMES}).index


def error_breakdown(
    readings: Sequence[Mapping[str, Any]], targets: Sequence[int], seen: Sequence[int]
) -> dict[str, Any]:
    """
    Which attributes of `readings` are wrong against `targets` (combination indices): per attribute the number
    of readings with it wrong, a histogram over 0..6 of the number of wrong attributes, the ten most frequent
    sets of wrong attributes, and `reads_as_seen`: the readings (all six read) that name a seen combination other
    than their target.
    """
    seen = set(int(index) for index in seen)
    wrong_counts = dict.fromkeys(ATTRIBUTE_NAMES, 0)
    wrong_sets: dict[str, int] = {}
    num_wrong, as_seen = [], 0
    for reading, target in zip(readings, targets, strict=True):
        wrong = wrong_attributes(reading, target)
        for name in wrong:
            wrong_counts[name] += 1
        num_wrong.append(len(wrong))
        if wrong:
            key = "+".join(wrong)
            wrong_sets[key] = wrong_sets.get(key, 0) + 1
        combination = reading_combination(reading)
        as_seen += combination is not None and combination != int(target) and combination in seen
    return {
        "count": len(num_wrong),
        "wrong_by_attribute": wrong_counts,
        "num_wrong_attributes": _histogram(num_wrong, len(ATTRIBUTE_NAMES) + 1),
        "wrong_sets": dict(sorted(wrong_sets.items(), key=lambda item: -item[1])[:10]),
        "reads_as_other_seen_combination": as_seen,
    }


def wrong_attributes(reading: Mapping[str, Any], target: int) -> list[str]:
    """The attributes a reading gets wrong (an unreadable one counts as wrong)."""
    target = ShapeAttributes.from_index(int(target))
    return [name for name in ATTRIBUTE_NAMES if reading.get(name) != getattr(target, name)]


def with_shape_floor(reading: Mapping[str, Any], min_confidence: float) -> dict[str, Any]:
    """The reading under the proposed stricter rule: the shape is unreadable (`None`) when its confidence
    (`1 - e1 / e2`, the two smallest fit errors) is under `min_confidence`."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"`min_confidence` must lie in [0, 1], got {min_confidence!r}")
    confidence = reading["confidence"]["shape"]
    if reading["shape"] is None or confidence >= min_confidence:
        return dict(reading)
    return {**reading, "shape": None}


def floor_sweep(
    reading_sets: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[int]]], floors: Sequence[float]
) -> list[dict[str, Any]]:
    """
    The proposed rule at each of `floors`: for each named set of readings and their target combinations, the
    shape and all-attribute accuracy under `with_shape_floor`, and `dropped`, the shapes read (right or wrong)
    with a confidence under the floor. Returns one `{"floor": floor, name: {"shape", "all", "dropped"}, ...}`
    per floor.
    """
    sweep = []
    for floor in floors:
        row: dict[str, Any] = {"floor": floor}
        for name, (readings, targets) in reading_sets.items():
            accuracy = attribute_accuracy(
                [with_shape_floor(reading, floor) for reading in readings], list(targets)
            )
            dropped = sum(
                reading["shape"] is not None and reading["confidence"]["shape"] < floor
                for reading in readings
            )
            row[name] = {"shape": accuracy["shape"], "all": accuracy["all"], "dropped": dropped}
        sweep.append(row)
    return sweep


def highest_floor(
    sweep: Sequence[Mapping[str, Any]], exact: str, degraded: Sequence[str], max_loss: float
) -> float | None:
    """
    The highest floor of a `floor_sweep` (whose first row is the lowest floor) at which the `exact` set still
    has every shape right and each of the `degraded` sets loses at most `max_loss` of its shape accuracy at the
    lowest floor; `None` when no floor qualifies.
    """
    lowest = sweep[0]
    floors = [
        row["floor"]
        for row in sweep
        if row[exact]["shape"] == 1.0
        and all(row[name]["shape"] >= lowest[name]["shape"] - max_loss for name in degraded)
    ]
    return max(floors, default=None)


def shape_confusion(
    readings: Sequence[Mapping[str, Any]], targets: Sequence[int]
) -> dict[str, dict[str, int]]:
    """`{asked shape: {read shape (or "unreadable"): count}}` over readings and their target combinations."""
    confusion: dict[str, dict[str, int]] = {shape: {} for shape in ATTRIBUTE_VALUES["shape"]}
    for reading, target in zip(readings, targets, strict=True):
        row = confusion[ShapeAttributes.from_index(int(target)).shape]
        read = reading["shape"] or "unreadable"
        row[read] = row.get(read, 0) + 1
    return confusion


def shape_confidence_quantiles(
    readings: Sequence[Mapping[str, Any]], targets: Sequence[int], shape: str
) -> dict[str, Any]:
    """The shape confidences of the readings that read `shape` where it is the target's: their count, minimum
    and 1st, 5th and 50th percentiles."""
    confidences = [
        reading["confidence"]["shape"]
        for reading, target in zip(readings, targets, strict=True)
        if reading["shape"] == shape == ShapeAttributes.from_index(int(target)).shape
    ]
    if not confidences:
        return {"count": 0}
    quantiles = np.percentile(confidences, [0, 1, 5, 50]).round(4).tolist()
    return {"count": len(confidences), **dict(zip(("min", "p1", "p5", "p50"), quantiles, strict=True))}


__all__ = [
    "assembled_codes",
    "embedding_agreement",
    "oracle_attribute_codes",
    "PROBE_WEIGHT_DECAY",
    "attribute_labels",
    "code_neighbourhood",
    "cross_validated_probe",
    "error_breakdown",
    "floor_sweep",
    "hamming_distances",
    "highest_floor",
    "linear_probe_predictions",
    "one_hot_codes",
    "probe_attributes",
    "reading_combination",
    "shape_confidence_quantiles",
    "shape_confusion",
    "shared_attributes",
    "with_shape_floor",
    "wrong_attributes",
]
