"""The Markdown report of `seed-hf probe-shapes` (`probe.md`): the tables of a probe's `probe.json`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from . import world


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _span(values: Sequence[float]) -> str:
    return f"{_percent(min(values))}-{_percent(max(values))}"


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value)
    return round(value, 3) if isinstance(value, float) else value


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _agreement_table(label: str, figures: dict[str, Any]) -> list[str]:
    """Rows of `embedding_agreement` figures, `{source: {split: figures}}`: mean cosine / own nearest per split."""
    splits = ("seen", "unseen")
    return _table(
        [label, *splits],
        [
            [
                source,
                *(
                    f"{by_split[split]['mean_cosine']:.3f} / {_percent(by_split[split]['nearest_is_own'])}"
                    for split in splits
                ),
            ]
            for source, by_split in figures.items()
        ],
    )


def format_report(results: dict[str, Any]) -> str:
    """The Markdown tables of a probe's results (`probe.md`)."""
    names = world.ATTRIBUTE_NAMES
    tokenizer = results["tokenizer"]
    settings = {key: value for key, value in results["settings"].items() if not isinstance(value, dict)}
    lines = [
        "# SEED-Shapes composition probe",
        "",
        f"Model `{results['model']}`; settings `{json.dumps(settings)}`; stage times (s) "
        f"`{json.dumps(results['stage_times_s'])}`.",
        "",
        "## 1. Tokenizer",
        "",
        f"Linear probes: unseen (trained on the 875 seen, scored on the 97 unseen) / seen "
        f"({results['settings']['seen_folds']}-fold "
        "cross-validation over the 875 seen).",
        "",
    ]
    lines += _table(
        ["features", "dims", *names, "all six"],
        [
            [
                name,
                probe["dimensions"],
                *(
                    f"{_percent(probe['unseen'][key])} / {_percent(probe['seen_heldout'][key])}"
                    for key in (*names, "all")
                ),
            ]
            for name, probe in tokenizer["linear_probes"].items()
        ],
    )
    codes = tokenizer["codes"]
    unseen, seen = codes["unseen_vs_seen"], codes["seen_vs_other_seen"]
    lines += [
        "",
        f"Distinct code sequences: {codes['distinct_sequences']['seen']} of 875 seen images, "
        f"{codes['distinct_sequences']['unseen']} of 97 unseen; {codes['codes_in_use']} codes in use. Unseen "
        f"images whose sequence equals a seen image's: **{unseen['collisions']} of {unseen['queries']}** (seen "
        f"images whose sequence equals another seen image's: {seen['collisions']}).",
        "",
        f"Overlap with the nearest seen sequence: unseen {_percent(unseen['mean_nearest_overlap'])} of positions "
        f"({_span(unseen['nearest_overlap_by_position'])} by position), seen (nearest other seen) "
        f"{_percent(seen['mean_nearest_overlap'])} ({_span(seen['nearest_overlap_by_position'])}). Attributes "
        "shared with that nearest "
        f"seen combination (counts of 0..6): unseen {unseen['nearest_shared_attributes']}, seen "
        f"{seen['nearest_shared_attributes']}.",
        "",
    ]
    lines += _table(
        ["positions equal to a seen image differing in one attribute", *names],
        [
            [label, *(_percent(figures["one_attribute_overlap"][name]["mean"]) for name in names)]
            for label, figures in (("unseen image", unseen), ("seen image", seen))
        ],
    )
    assembled = codes["assembled"]
    lines += [
        "",
        "Codes equal to the sequence assembled from the seen images' codes attribute by attribute (the code the "
        "seen images with the same value of a position's attribute hold most often): positions / whole "
        "sequences, seen "
        f"{_percent(assembled['seen']['positions_equal'])} / {_percent(assembled['seen']['sequences_equal'])}, "
        f"unseen {_percent(assembled['unseen']['positions_equal'])} / "
        f"{_percent(assembled['unseen']['sequences_equal'])}.",
        "",
        "Seen images' codes over each attribute's query positions: purity (share of codes held mostly by images "
        "with the same value of the attribute) and distinct codes per position and value (1 and 1 for "
        "attribute-wise codes).",
        "",
    ]
    lines += _table(
        ["figure", *names],
        [
            ["purity", *(_percent(codes["purity"][name]["purity"]) for name in names)],
            ["codes per value", *(f"{codes['purity'][name]['codes_per_value']:.1f}" for name in names)],
        ],
    )
    if "generation_targets" in results:
        lines += [
            "",
            f"Generation embedding against the teacher's (`{results['teacher']}`): mean cosine / the most similar "
            "of the 972 teacher embeddings is the image's own.",
            "",
        ]
        lines += _agreement_table("codes decoded", results["generation_targets"])
    if "oracle_generation_head" in results:
        oracle = results["oracle_generation_head"]
        lines += [
            "",
            f"A fresh generation head trained {oracle['steps']} steps on the seen images' codes (mean cosine / own "
            "nearest, as above):",
            "",
        ]
        lines += _agreement_table(
            "codes", {source: oracle[source] for source in ("oracle_attribute_codes", "own_codes")}
        )
    if "llm_codes" in results:
        llm_codes = results["llm_codes"]
        lines += [
            "",
            f"Codes the LLM `{results['llm']}` writes greedily for one caption per combination (prompt: `<s>`, the "
            "caption, `<img>`): attributes read from them, their generation embedding against the asked image's "
            "teacher embedding (mean cosine / own nearest), the image's own sequence (whole / per position) and "
            "copies of a seen image's sequence.",
            "",
        ]
        lines += _table(
            ["split (n)", *names, "all", "generation embedding", "own codes", "copies a seen sequence"],
            [
                [
                    f"{split} ({figures['count']})",
                    *(_percent(figures["attributes_from_codes"][key]) for key in (*names, "all")),
                    f"{figures['generation_embedding']['mean_cosine']:.3f} / "
                    f"{_percent(figures['generation_embedding']['nearest_is_own'])}",
                    f"{_percent(figures['own_codes'])} / {_percent(figures['own_codes_per_position'])}",
                    _percent(figures["copies_a_seen_sequence"]),
                ]
                for split, figures in llm_codes.items()
            ],
        )
    if "decoder" not in results:  # a tokenizer alone
        return "\n".join(lines) + "\n"
    decoder, llm, reader = (results[key] for key in ("decoder", "llm", "reader"))
    lines += ["", "## 2. Decoder: reconstructions", ""]
    rows = []
    for split, figures in decoder.items():
        for source in ("from_codes", "from_unquantized"):
            source_figures = figures[source]
            accuracy, errors = source_figures["accuracy"], source_figures["errors"]
            rows.append(
                [
                    f"{split} {source} (n={accuracy['count']})",
                    *(_percent(accuracy[key]) for key in (*names, "all")),
                    errors["reads_as_other_seen_combination"],
                    source_figures.get("reads_as_nearest_code_neighbour", "-"),
                    source_figures.get("reads_as_nearest_training_input", "-"),
                ]
            )
    lines += _table(
        [
            "split / input",
            *names,
            "all",
            "reads as another seen combination",
            "... the nearest seen codes'",
            "... the nearest training input's",
        ],
        rows,
    )
    lines += ["", "## 3. LLM: the code sequences drawn for held-out captions", ""]
    figures_shown = (
        "copies_a_seen_sequence",
        "equals_true_codes",
        "mean_distance_to_nearest_seen",
        "mean_distance_to_true_codes",
        "mean_first_difference_from_true_codes",
        "nearest_seen_shares_attributes",
        "copy_shares_attributes",
        "nearest_seen_differs_in",
        "drawing_reads_as_nearest_seen",
    )
    rows = [["text_to_image all", *(_percent(split["text_to_image"]["all"]) for split in llm.values())]]
    rows += [[key, *(_rounded(split[key]) for split in llm.values())] for key in figures_shown]
    rows += [
        [f"teacher forced: {key}", *(_rounded(split["teacher_forced"][key]) for split in llm.values())]
        for key in next(iter(llm.values()))["teacher_forced"]
        if key != "true_codes_accuracy_by_position"
    ]
    lines += _table(["figure", *llm], rows)
    lines += ["", "## 4. Reader: shape confidence of right readings (min / 1st / 5th / 50th percentile)", ""]
    confidence_sets = {
        **reader["calibration_confidence"],
        **{f"drawn {split}": by_shape for split, by_shape in reader["drawn_shape_confidence"].items()},
    }
    lines += _table(
        ["images", *world.SHAPES],
        [
            [
                name,
                *(
                    " / ".join(str(by_shape[shape].get(q, "-")) for q in ("min", "p1", "p5", "p50"))
                    + f" (n={by_shape[shape]['count']})"
                    for shape in world.SHAPES
                ),
            ]
            for name, by_shape in confidence_sets.items()
        ],
    )
    sweep = reader["floor_sweep"]
    sets = [key for key in sweep[0] if key != "floor"]
    lines += [
        "",
        "Proposed rule: the shape is unreadable when its confidence is under the floor. Per floor and image set: "
        "shape accuracy / all-attribute accuracy (shapes whose confidence is under the floor).",
        "",
    ]
    lines += _table(
        ["floor", *sets],
        [
            [
                row["floor"],
                *(
                    f"{_percent(row[name]['shape'])} / {_percent(row[name]['all'])} ({row[name]['dropped']})"
                    for name in sets
                ),
            ]
            for row in sweep
        ],
    )
    lines += [
        "",
        f"Proposed floor: **{reader['proposed_floor']}**, the highest that keeps every exact render's shape and "
        f"loses at most {100 * results['settings']['max_degraded_loss']:.1f} points of shape accuracy on each "
        f"degraded set (per set: `{json.dumps(reader['highest_floor_by_degradation'])}`). The reader applies "
        f"{reader['reader_floor']}; floors under it change nothing.",
        "",
        "Shapes read in the drawings (asked: read -> count): "
        + "; ".join(
            f"{split} `{json.dumps(confusion)}`"
            for split, confusion in reader["drawn_shape_confusion"].items()
        )
        + ".",
        "",
        "Least sure accepted squares and triangles among the seen drawings:",
        "",
    ]
    lines += _table(
        ["prompt", "asked", "read", "confidence"],
        [
            [entry["prompt"], entry["asked"], entry["read_shape"], entry["shape_confidence"]]
            for entry in reader["least_sure_accepted_squares_triangles"]
        ],
    )
    return "\n".join(lines) + "\n"


__all__ = ["format_report"]
