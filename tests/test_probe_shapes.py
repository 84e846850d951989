"""`seed-hf probe-shapes` end to end on a smoke-schedule checkpoint (its figures checked against `evaluate-shapes` and
against each other), and the probe's measures on constructed cases whose answers are known."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from seed_hf.cli import main as cli
from seed_hf.training.shapes import ATTRIBUTE_NAMES, ATTRIBUTE_VALUES, ShapeAttributes, neighbours, world
from seed_hf.training.shapes.evaluate import GRID_CELL, ShapesEvaluator
from seed_hf.training.shapes.probe import (
    FEATURE_SETS,
    SEEN_FOLDS,
    SHAPE_FLOORS,
    CompositionProbe,
    probe_llm_codes,
    probe_tokenizer_folder,
)
from seed_hf.training.shapes.probe_measures import (
    agreement_with_targets,
    assembled_codes,
    attribute_labels,
    attributes_read_from_codes,
    code_neighbourhood,
    code_purity,
    cross_validated_probe,
    embedding_agreement,
    error_breakdown,
    floor_sweep,
    hamming_distances,
    highest_floor,
    linear_probe_predictions,
    one_hot_codes,
    oracle_attribute_codes,
    probe_attributes,
    shape_confusion,
    with_shape_floor,
)
from seed_hf.training.tokenizer_models import query_attribute_groups

NUM_SAMPLES = 2
SEEN, UNSEEN = np.array(world.seen_combinations()), np.array(world.unseen_combinations())
EVERY_COMBINATION = np.arange(world.NUM_COMBINATIONS)


@pytest.fixture(scope="module")
def probe_dir(shapes_smoke_checkpoint, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("probe")
    arguments = [
        "--model",
        str(shapes_smoke_checkpoint),
        "--output-dir",
        str(output_dir),
        "--num-samples",
        str(NUM_SAMPLES),
    ]
    assert cli(["probe-shapes", *arguments]) == 0
    return output_dir


@pytest.fixture(scope="module")
def results(probe_dir):
    return json.loads((probe_dir / "probe.json").read_text())


# ---------------------------------------------------------------------------------------------- the command


def test_the_command_writes_every_stage(probe_dir, results):
    assert set(results) >= {"tokenizer", "decoder", "llm", "reader", "settings", "stage_times_s"}
    for name in FEATURE_SETS:
        probe = results["tokenizer"]["linear_probes"][name]
        assert probe["unseen"]["count"] == 97 and probe["seen_heldout"]["count"] == 875
        assert all(
            0 <= probe[protocol][key] <= 1
            for protocol in ("unseen", "seen_heldout")
            for key in ATTRIBUTE_NAMES
        )
    assert results["settings"]["seen_folds"] == SEEN_FOLDS
    for split in ("test_seen", "test_unseen"):
        assert results["decoder"][split]["combinations"] == NUM_SAMPLES
        assert results["llm"][split]["count"] == NUM_SAMPLES
    assert [row["floor"] for row in results["reader"]["floor_sweep"]] == list(SHAPE_FLOORS)
    report = (probe_dir / "probe.md").read_text()
    for heading in ("## 1. Tokenizer", "## 2. Decoder", "## 3. LLM", "## 4. Reader"):
        assert heading in report
    # rows: unseen truth, two decodings, nearest seen codes; unseen caption truth, drawing, nearest seen codes;
    # the least sure seen squares and triangles
    assert Image.open(probe_dir / "probe.png").height == 8 * GRID_CELL


def test_the_probe_reproduces_evaluate_shapes(shapes_smoke_checkpoint, results):
    evaluator = ShapesEvaluator(shapes_smoke_checkpoint, num_samples=NUM_SAMPLES)
    for split in ("test_seen", "test_unseen"):
        text_to_image = evaluator.evaluate_text_to_image(split)[0]
        text_to_image.pop("one_image_rate")
        assert results["llm"][split]["text_to_image"] == text_to_image
        assert (
            results["decoder"][split]["from_codes"]["accuracy"] == evaluator.evaluate_reconstruction(split)[0]
        )


def test_the_code_figures_agree_with_each_other(results):
    codes = results["tokenizer"]["codes"]
    unseen = codes["unseen_vs_seen"]
    assert unseen["queries"] == 97 and len(unseen["nearest"]) == 97
    assert unseen["collisions"] == sum(entry["distance"] == 0 for entry in unseen["nearest"])
    assert sum(unseen["nearest_shared_attributes"]) == 97
    assert codes["distinct_sequences"]["seen"] <= 875
    for split, figures in results["llm"].items():
        assert figures["copies_a_seen_sequence"] == figures["distance_to_nearest_seen"][0]
        assert sum(figures["copy_shares_attributes"]) == figures["copies_a_seen_sequence"]
        assert sum(figures["nearest_seen_shares_attributes"]) == NUM_SAMPLES
        if split == "test_seen":  # a seen image's own codes are a seen sequence
            assert figures["equals_true_codes"] <= figures["copies_a_seen_sequence"]


def test_every_exact_render_keeps_its_shape_at_the_proposed_floor(results):
    reader = results["reader"]
    proposed = next(row for row in reader["floor_sweep"] if row["floor"] == reader["proposed_floor"])
    assert proposed["exact"]["shape"] == 1.0 and proposed["exact"]["all"] == 1.0


def test_the_tokenizer_alone_is_probed_against_its_teacher(
    shapes_smoke_checkpoint, results, tmp_path, capsys
):
    run = shapes_smoke_checkpoint.parent
    output_dir = tmp_path / "tokenizer_probe"
    arguments = ["--tokenizer", str(run / "tokenizer_stage2"), "--teacher", str(run / "teacher")]
    arguments += [
        "--oracle-head-steps",
        "5",
        "--llm",
        str(run / "llm_full"),
        "--num-samples",
        str(NUM_SAMPLES),
    ]
    assert cli(["probe-shapes", *arguments, "--output-dir", str(output_dir)]) == 0
    alone = json.loads((output_dir / "probe.json").read_text())
    # the same tokenizer as the checkpoint's: the same tokenizer figures as the whole probe
    assert alone["tokenizer"] == results["tokenizer"]
    assembled = alone["tokenizer"]["codes"]["assembled"]
    assert set(assembled) == {"seen", "unseen"} and all(
        0 <= figure["positions_equal"] <= 1 for figure in assembled.values()
    )
    targets = alone["generation_targets"]
    assert set(targets) == {"own_codes", "assembled_codes"}
    assert all(
        -1 <= targets[source][split]["mean_cosine"] <= 1 for source in targets for split in ("seen", "unseen")
    )
    oracle = alone["oracle_generation_head"]
    assert oracle["steps"] == 5 and set(oracle) == {"steps", "oracle_attribute_codes", "own_codes"}
    assert all(
        0 <= oracle[source][split]["nearest_is_own"] <= 1
        for source in ("oracle_attribute_codes", "own_codes")
        for split in ("seen", "unseen")
    )
    llm_codes = alone["llm_codes"]
    assert alone["llm"] == str(run / "llm_full") and set(llm_codes) == {"seen", "unseen"}
    for figures in llm_codes.values():
        assert figures["count"] == NUM_SAMPLES
        assert set(figures["attributes_from_codes"]) == {*ATTRIBUTE_NAMES, "all"}
        assert figures["attributes_from_codes"]["all"] <= min(
            figures["attributes_from_codes"][name] for name in ATTRIBUTE_NAMES
        )
        assert figures["own_codes"] <= figures["own_codes_per_position"] <= 1
        assert -1 <= figures["generation_embedding"]["mean_cosine"] <= 1
    report = (output_dir / "probe.md").read_text()
    assert "## 1. Tokenizer" in report and "Generation embedding against the teacher's" in report
    assert "A fresh generation head trained 5 steps" in report
    assert f"Codes the LLM `{run / 'llm_full'}` writes greedily" in report
    assert "## 2. Decoder" not in report
    arguments = [
        "--model",
        str(shapes_smoke_checkpoint),
        "--teacher",
        "x",
        "--output-dir",
        str(tmp_path / "y"),
    ]
    assert cli(["probe-shapes", *arguments]) == 2
    assert "--teacher goes with --tokenizer" in capsys.readouterr().err
    arguments = ["--tokenizer", str(run / "tokenizer_stage2"), "--llm", str(run / "llm_full")]
    assert cli(["probe-shapes", *arguments, "--output-dir", str(tmp_path / "z")]) == 2
    assert "--llm goes with --tokenizer and --teacher" in capsys.readouterr().err
    with pytest.raises(
        ValueError, match="`num_samples` must be a positive int \\(captions per split for `llm_dir`\\), got 0"
    ):
        probe_tokenizer_folder(
            run / "tokenizer_stage2", tmp_path / "w", run / "teacher", llm_dir=run / "llm_full", num_samples=0
        )
    # an LLM whose image codes are not the tokenizer's
    other_tokenizer = SimpleNamespace(config=SimpleNamespace(num_codes=7))
    with pytest.raises(
        ValueError, match=r"writes \d+ image codes, 32 per image; the visual tokenizer has 7 codes"
    ):
        probe_llm_codes(
            run / "llm_full", other_tokenizer, {"codes": torch.zeros(972, 32)}, torch.zeros(972, 4), 1
        )


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="`num_samples` must be a positive int, got 0"):
        CompositionProbe(tmp_path, num_samples=0)
    with pytest.raises(ValueError, match="`model_dir` must be a SEED checkpoint folder"):
        CompositionProbe(tmp_path)


# ---------------------------------------------------------------------------------------------- the measures


def _attribute_one_hot(indices) -> np.ndarray:
    labels = attribute_labels(indices)
    return np.concatenate(
        [
            np.eye(len(ATTRIBUTE_VALUES[name]))[labels[:, column]]
            for column, name in enumerate(ATTRIBUTE_NAMES)
        ],
        axis=1,
    )


def test_a_probe_on_the_attributes_themselves_is_perfect_on_unseen_combinations():
    features = _attribute_one_hot(EVERY_COMBINATION)
    expected = dict.fromkeys((*ATTRIBUTE_NAMES, "all"), 1.0)
    assert probe_attributes(features, EVERY_COMBINATION, SEEN, UNSEEN) == {**expected, "count": 97}
    assert cross_validated_probe(features, EVERY_COMBINATION, SEEN, SEEN_FOLDS, 0) == {
        **expected,
        "count": 875,
    }


def test_a_probe_reads_only_the_attributes_its_features_carry():
    # the colour alone: colour is read on every unseen image, the other attributes near chance (1/3 to 1/2)
    labels = attribute_labels(EVERY_COMBINATION)
    colour = np.eye(6)[labels[:, ATTRIBUTE_NAMES.index("color")]]
    scores = probe_attributes(colour, EVERY_COMBINATION, SEEN, UNSEEN)
    assert scores["color"] == 1.0
    assert all(scores[name] < 0.65 for name in ATTRIBUTE_NAMES if name != "color"), scores
    assert scores["all"] < 0.1


def test_a_feature_constant_in_training_cannot_move_a_prediction():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(size=(60, 4)), np.zeros((60, 1))], axis=1)
    labels = (train[:, 0] > 0).astype(int)
    test = np.concatenate([rng.normal(size=(20, 4)), np.zeros((20, 1))], axis=1)
    shifted = test.copy()
    shifted[:, -1] = 1e3
    np.testing.assert_array_equal(
        linear_probe_predictions(train, labels, test, 2), linear_probe_predictions(train, labels, shifted, 2)
    )
    assert np.mean(linear_probe_predictions(train, labels, test, 2) == (test[:, 0] > 0)) >= 0.9


def test_probe_inputs_are_checked():
    with pytest.raises(ValueError, match="same non-zero number of rows, got 3 and 2"):
        linear_probe_predictions(np.zeros((3, 2)), np.zeros(2, int), np.zeros((1, 2)), 2)
    with pytest.raises(ValueError, match="the same width, got 2 and 3"):
        linear_probe_predictions(np.zeros((3, 2)), np.zeros(3, int), np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match=r"`train_labels` must lie in \[0, 2\), got \[0, 2\]"):
        linear_probe_predictions(np.zeros((3, 2)), np.array([0, 1, 2]), np.zeros((1, 2)), 2)
    with pytest.raises(ValueError, match=r"`num_folds` must lie in \[2, 875\]"):
        cross_validated_probe(np.zeros((972, 1)), EVERY_COMBINATION, SEEN, 1, 0)


def test_one_hot_codes_round_trip():
    codes = np.random.default_rng(0).integers(0, 7, size=(5, 4))
    features = one_hot_codes(codes, 7)
    assert features.shape == (5, 28) and features.sum() == 20
    np.testing.assert_array_equal(features.reshape(5, 4, 7).argmax(-1), codes)


def test_code_neighbourhood_of_a_constructed_case():
    base = ShapeAttributes.from_index(int(UNSEEN[0]))
    recoloured = base.replace(color=next(c for c in world.COLORS if c != base.color))
    moved = base.replace(x=next(x for x in world.X_POSITIONS if x != base.x))
    gallery_indices = [recoloured.index, moved.index]
    gallery = np.arange(64).reshape(2, 32)
    query_first = gallery[0].copy()  # a collision with the recoloured image
    query_second = gallery[1].copy()
    query_second[:4] = 99  # 4 positions away from the moved image
    figures = code_neighbourhood(
        np.stack([query_first, query_second]), [base.index, base.index], gallery, gallery_indices
    )
    assert figures["collisions"] == 1 and figures["collision_pairs"] == [[base.index, recoloured.index]]
    assert [entry["distance"] for entry in figures["nearest"]] == [0, 4]
    assert [entry["combination"] for entry in figures["nearest"]] == gallery_indices
    assert figures["mean_nearest_overlap"] == pytest.approx((1 + 28 / 32) / 2)
    assert (
        figures["nearest_overlap_by_position"][:4] == [0.5] * 4
        and figures["nearest_overlap_by_position"][4] == 1
    )
    assert figures["nearest_shared_attributes"] == [0, 0, 0, 0, 0, 2, 0]
    overlap = figures["one_attribute_overlap"]
    # query 1 vs the recoloured image: all equal; query 2 vs it: nothing equal (disjoint code ranges)
    assert overlap["color"] == {"mean": pytest.approx(0.5), "pairs": 2}
    assert overlap["x"] == {"mean": pytest.approx((0 + 28 / 32) / 2), "pairs": 2}
    assert overlap["shape"] == {"mean": None, "pairs": 0}
    # a gallery of the queries themselves: every query finds itself unless its own combination is excluded
    itself = code_neighbourhood(gallery, gallery_indices, gallery, gallery_indices)
    assert itself["collisions"] == 2
    assert code_neighbourhood(gallery, gallery_indices, gallery, gallery_indices, True)["collisions"] == 0


def test_hamming_distances_need_matching_positions():
    assert hamming_distances(np.array([[1, 2, 3]]), np.array([[1, 0, 3], [0, 0, 0]])).tolist() == [[1, 3]]
    with pytest.raises(ValueError, match=r"the same positions, got \(1, 3\) and \(1, 2\)"):
        hamming_distances(np.zeros((1, 3)), np.zeros((1, 2)))


def _reading(attributes: ShapeAttributes, shape_confidence: float = 0.9, **overrides) -> dict:
    values = {**attributes.to_dict(), **overrides}
    return {
        "valid": True,
        "reason": None,
        **values,
        "position": world.position_name(values["x"], values["y"]),
        "confidence": {**dict.fromkeys(ATTRIBUTE_NAMES, 0.9), "position": 0.9, "shape": shape_confidence},
    }


def test_error_breakdown_counts_wrong_attributes_and_readings_of_seen_combinations():
    target = ShapeAttributes.from_index(int(UNSEEN[0]))
    seen_neighbour = next(other for _, _, other in neighbours(target) if other.index in set(SEEN.tolist()))
    changed = next(name for name in ATTRIBUTE_NAMES if getattr(seen_neighbour, name) != getattr(target, name))
    readings = [_reading(target), _reading(seen_neighbour), _reading(target, shape=None)]
    breakdown = error_breakdown(readings, [target.index] * 3, SEEN)
    expected = dict.fromkeys(ATTRIBUTE_NAMES, 0)
    expected[changed] += 1
    expected["shape"] += 1
    assert breakdown["wrong_by_attribute"] == expected
    assert breakdown["num_wrong_attributes"] == [1, 2, 0, 0, 0, 0, 0]
    assert breakdown["reads_as_other_seen_combination"] == 1


def test_codes_are_assembled_attribute_by_attribute_from_the_seen_images():
    groups = query_attribute_groups(32, 6).numpy()
    labels = attribute_labels(EVERY_COMBINATION)
    # attribute-wise codes: each position's code is a function of its attribute's value
    table = np.random.default_rng(0).integers(0, 512, size=(32, 6))
    attribute_wise = np.stack([table[position, labels[:, groups[position]]] for position in range(32)], 1)
    np.testing.assert_array_equal(assembled_codes(attribute_wise, SEEN), attribute_wise)
    # one holistic position (a code per combination): only that position of every image differs
    holistic = attribute_wise.copy()
    holistic[:, 7] = EVERY_COMBINATION % 512
    assembled = assembled_codes(holistic, SEEN)
    assert (assembled != holistic).any(0).tolist() == [position == 7 for position in range(32)]


def test_code_purity_of_attribute_wise_holistic_and_mixed_codes():
    groups = query_attribute_groups(32, 6).numpy()
    labels = attribute_labels(EVERY_COMBINATION)
    oracle = oracle_attribute_codes(32)
    for figures in code_purity(oracle, SEEN).values():
        assert figures == {"purity": 1.0, "codes_per_value": 1.0}
    # a code per combination: every code is pure, but each value gets as many codes as it has seen images
    holistic = np.repeat(EVERY_COMBINATION[:, None], 32, 1)
    purity = code_purity(holistic, SEEN)
    seen_labels = labels[SEEN]
    for attribute, name in enumerate(ATTRIBUTE_NAMES):
        values, counts = np.unique(seen_labels[:, attribute], return_counts=True)
        assert purity[name] == {"purity": 1.0, "codes_per_value": pytest.approx(counts.mean())}, name
    # colour's positions share one code between two colours: half of those colours' images hold a code
    # whose majority is the other colour, at most
    colour = ATTRIBUTE_NAMES.index("color")
    mixed = oracle.copy()
    merged = (groups == colour)[None, :] & (labels[:, colour] == 1)[:, None]
    mixed[merged] = oracle[labels[:, colour] == 0][0, groups == colour][0]
    purity = code_purity(mixed, SEEN)
    shared = np.isin(seen_labels[:, colour], (0, 1))
    majority = np.bincount(seen_labels[shared, colour]).argmax()
    assert purity["color"]["purity"] == pytest.approx(
        1 - (seen_labels[shared, colour] != majority).mean() * shared.mean()
    )
    assert purity["color"]["codes_per_value"] == 1.0
    assert all(purity[name]["purity"] == 1.0 for name in ATTRIBUTE_NAMES if name != "color")


def test_attributes_are_read_from_codes_by_the_seen_images_holding_them():
    groups = query_attribute_groups(32, 6).numpy()
    labels = attribute_labels(EVERY_COMBINATION)
    oracle = oracle_attribute_codes(32)
    # attribute-wise codes: every combination, unseen ones too, is read from its codes
    np.testing.assert_array_equal(attributes_read_from_codes(oracle, oracle, SEEN), labels)
    # a code per combination: seen sequences are read right, unseen ones hold no code a seen image holds
    holistic = np.repeat(EVERY_COMBINATION[:, None], 32, 1)
    np.testing.assert_array_equal(attributes_read_from_codes(holistic[SEEN], holistic, SEEN), labels[SEEN])
    assert (attributes_read_from_codes(holistic[UNSEEN], holistic, SEEN) == -1).all()
    # colour's six positions vote: two of them standing for another colour do not change the reading, four do
    colour = ATTRIBUTE_NAMES.index("color")
    colour_positions = np.flatnonzero(groups == colour)
    image, other = SEEN[0], next(index for index in SEEN if labels[index, colour] != labels[SEEN[0], colour])
    for changed, expected in ((2, labels[image, colour]), (4, labels[other, colour])):
        drawn = oracle[image].copy()
        drawn[colour_positions[:changed]] = oracle[other, colour_positions[:changed]]
        read = attributes_read_from_codes(drawn[None], oracle, SEEN)[0]
        assert (
            read[colour] == expected
            and np.delete(read, colour).tolist() == np.delete(labels[image], colour).tolist()
        )
    # a code past every code seen at a position is no vote
    drawn = oracle[image].copy()
    drawn[colour_positions] = 10_000
    assert attributes_read_from_codes(drawn[None], oracle, SEEN)[0, colour] == -1


def test_agreement_with_targets_of_a_subset_of_combinations():
    targets = np.random.default_rng(0).normal(size=(world.NUM_COMBINATIONS, 8))
    rows = UNSEEN[:5]
    assert agreement_with_targets(targets[rows] * 2.0, targets, rows) == pytest.approx(
        {"mean_cosine": 1.0, "nearest_is_own": 1.0}
    )
    assert agreement_with_targets(targets[rows[::-1]], targets, rows)["nearest_is_own"] == pytest.approx(
        1 / 5
    )


def test_oracle_codes_are_attribute_wise():
    oracle = oracle_attribute_codes(32)
    np.testing.assert_array_equal(assembled_codes(oracle, SEEN), oracle)
    assert len(np.unique(oracle)) == sum(len(values) for values in ATTRIBUTE_VALUES.values())
    labels = attribute_labels(EVERY_COMBINATION)
    for position, attribute in enumerate(query_attribute_groups(32, 6).tolist()):
        # the code at a position and the value of its attribute determine each other
        pairs = set(zip(oracle[:, position].tolist(), labels[:, attribute].tolist(), strict=True))
        assert len(pairs) == len(ATTRIBUTE_VALUES[ATTRIBUTE_NAMES[attribute]]), position


def test_embedding_agreement_is_cosine_and_own_nearest():
    targets = np.random.default_rng(0).normal(size=(world.NUM_COMBINATIONS, 8))
    assert embedding_agreement(targets * 3.0, targets, UNSEEN) == pytest.approx(
        {"mean_cosine": 1.0, "nearest_is_own": 1.0}
    )
    shifted = np.roll(targets, 1, axis=0)  # every embedding is its neighbour's target
    assert embedding_agreement(shifted, targets, UNSEEN)["nearest_is_own"] == 0.0


def test_the_shape_floor_and_its_sweep():
    target = ShapeAttributes.from_index(0)
    unsure, sure = _reading(target, shape_confidence=0.1), _reading(target, shape_confidence=0.6)
    assert with_shape_floor(unsure, 0.15)["shape"] is None and with_shape_floor(unsure, 0.05) == unsure
    assert with_shape_floor(sure, 0.5) == sure
    with pytest.raises(ValueError, match=r"`min_confidence` must lie in \[0, 1\], got 1.5"):
        with_shape_floor(sure, 1.5)
    sweep = floor_sweep({"exact": ([sure], [0]), "degraded": ([unsure, sure], [0, 0])}, (0.0, 0.2, 0.7))
    assert [row["degraded"] for row in sweep] == [
        {"shape": 1.0, "all": 1.0, "dropped": 0},
        {"shape": 0.5, "all": 0.5, "dropped": 1},
        {"shape": 0.0, "all": 0.0, "dropped": 2},
    ]
    # 0.2 keeps the exact set but loses half of the degraded one; 0.7 loses the exact set's shape
    assert highest_floor(sweep, "exact", ("degraded",), max_loss=0.01) == 0.0
    assert highest_floor(sweep, "exact", ("degraded",), max_loss=0.5) == 0.2
    assert highest_floor(sweep, "exact", (), max_loss=0.0) == 0.2


def test_shape_confusion_counts_what_each_asked_shape_was_read_as():
    triangle = ShapeAttributes("gray", "triangle", "small", "green", "left", "top")
    readings = [_reading(triangle, shape="circle"), _reading(triangle), _reading(triangle, shape=None)]
    assert shape_confusion(readings, [triangle.index] * 3) == {
        "circle": {},
        "square": {},
        "triangle": {"circle": 1, "triangle": 1, "unreadable": 1},
    }
