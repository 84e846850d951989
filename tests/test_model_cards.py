"""Model cards (`seed_hf.model_cards`): Hub metadata of the shipped SEED-Shapes cards, their measured figures, the
cards of converted systems, and the shipped cards kept equal to what the builder renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from seed_hf.model_cards import write_converted_cards, write_shapes_cards
from seed_hf.model_cards.builder import ATTRIBUTE_CHART_TASKS, seed_hf_version, shapes_attribute_chart
from seed_hf.training.shapes.charts import COLOURS

SHAPES = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
BASE_TAGS = {"seed", "seed-llama", "seed-hf"}
# folder -> (library_name, pipeline_tag)
SHAPES_FOLDERS = {
    ".": ("transformers", "any-to-any"),
    "visual_tokenizer": ("transformers", "image-feature-extraction"),
    "detokenizer": ("diffusers", "image-to-image"),
}
SPLITS = ("test_seen", "test_unseen")
OFFICIAL = {
    "tokenizer_repo": "AILab-CVC/seed-tokenizer-2",
    "llm_repo": "AILab-CVC/seed-llama-8b-sft",
    "unclip_repo": "stabilityai/stable-diffusion-2-1-unclip",
}
PARITY = {
    "tokenizer codes vs authors' code": "identical on fixture tiny-a",
    "LLM logits vs authors' code": "max abs difference 0.0 (fp32)",
}


def _shipped_metrics() -> dict:
    return json.loads((SHAPES / "eval_metrics.json").read_text())


def _eval_results(card: ModelCard) -> dict[tuple[str, str, str], float]:
    """`{(dataset_config, dataset_split, metric_name): value}` of a card's model-index."""
    results = card.data.eval_results or []
    return {(r.dataset_config, r.dataset_split, r.metric_name): r.metric_value for r in results}


def _mirror(source: Path, target: Path) -> Path:
    """The folder layout of `source` with its JSON files, other files empty: all the card builder looks at."""
    target.mkdir(parents=True)
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json" or path.name == "README.md":
            destination.write_bytes(path.read_bytes())
        else:
            destination.touch()
    return target


@pytest.mark.parametrize("folder", list(SHAPES_FOLDERS))
def test_shipped_cards_have_the_hub_metadata(folder):
    card = ModelCard.load(SHAPES / folder / "README.md")
    library_name, pipeline_tag = SHAPES_FOLDERS[folder]
    assert card.data.library_name == library_name
    assert card.data.pipeline_tag == pipeline_tag
    assert card.data.license == "apache-2.0"
    assert BASE_TAGS | {"seed-shapes"} <= set(card.data.tags)
    # trained from scratch: no base model
    assert card.data.base_model is None
    assert card.data.model_name.startswith("SEED-Shapes")


def test_top_card_holds_every_measured_figure_for_both_splits():
    metrics = _shipped_metrics()
    results = _eval_results(ModelCard.load(SHAPES / "README.md"))
    for split in SPLITS:
        measured = metrics[split]
        expected = {
            ("text_to_image", "all attributes right"): measured["text_to_image"]["all"],
            **{
                ("text_to_image", f"{name} right"): measured["text_to_image"][name]
                for name in ("background", "shape", "size", "color", "x", "y")
            },
            ("caption", "attributes named right (mean)"): measured["caption"]["mean"],
            ("caption", "all attributes right"): measured["caption"]["all"],
            ("vqa", "accuracy"): measured["vqa"]["accuracy"],
            ("edit", "target shown (all attributes)"): measured["edit"]["all"],
            ("reconstruction", "all attributes kept"): measured["reconstruction"]["all"],
            ("retrieval", "R@1 (caption -> image)"): measured["retrieval"]["r@1"],
            ("retrieval", "R@5 (caption -> image)"): measured["retrieval"]["r@5"],
            ("valid_images", "constrained decoding"): measured["valid_images"]["constrained"],
            ("valid_images", "no constraints"): measured["valid_images"]["unconstrained"],
            ("tokenizer_bf16_code_agreement", "codes equal"): measured["tokenizer_bf16_code_agreement"][
                "agreement"
            ],
        }
        for (task, name), value in expected.items():
            assert results[(task, split, name)] == pytest.approx(value, abs=5e-5), (task, split, name)
    card = ModelCard.load(SHAPES / "README.md")
    assert {result.dataset_split for result in card.data.eval_results} == set(SPLITS)
    by_task = {result.dataset_config: result for result in card.data.eval_results}
    assert by_task["text_to_image"].task_type == "text-to-image"
    assert by_task["caption"].task_type == "image-to-text"
    assert by_task["vqa"].task_type == "visual-question-answering"
    assert by_task["edit"].task_type == "image-to-image"
    assert by_task["reconstruction"].task_name.startswith("Reconstruction")
    # the metrics table of the text shows the same figures
    seen, unseen = metrics["test_seen"], metrics["test_unseen"]
    row = (
        f"| text-to-image: all attributes | {100 * seen['text_to_image']['all']:.1f}% | "
        f"{100 * unseen['text_to_image']['all']:.1f}% |"
    )
    assert row in card.text


def test_part_cards_hold_their_figures():
    metrics = _shipped_metrics()
    tokenizer = _eval_results(ModelCard.load(SHAPES / "visual_tokenizer" / "README.md"))
    detokenizer = _eval_results(ModelCard.load(SHAPES / "detokenizer" / "README.md"))
    for split in SPLITS:
        reconstruction = metrics[split]["reconstruction"]["all"]
        for results in (tokenizer, detokenizer):
            assert results[("reconstruction", split, "all attributes kept")] == pytest.approx(
                reconstruction, abs=5e-5
            )
        assert tokenizer[("tokenizer_bf16_code_agreement", split, "codes equal")] == pytest.approx(
            metrics[split]["tokenizer_bf16_code_agreement"]["agreement"], abs=5e-5
        )
    assert {key[0] for key in detokenizer} == {"reconstruction"}


def test_top_card_documents_loading_by_repo_id():
    text = (SHAPES / "README.md").read_text()
    assert 'AutoModel.from_pretrained("seed-hf/seed-shapes")' in text
    assert 'pipeline("seed-text-to-image", model="seed-hf/seed-shapes")' in text
    assert "trust_remote_code=True" in text
    # the parts listed are the folders that exist
    for part in ("visual_tokenizer", "detokenizer", "image_text_model"):
        assert (f"- `{part}/`:" in text) == (SHAPES / part).is_dir(), part


def test_shipped_cards_are_what_the_builder_renders(tmp_path):
    """The shipped cards can't drift from the builder and the shipped figures: regenerate them into a copy of the
    folder's layout and compare the text. If this fails, regenerate them with
    `write_shapes_cards("models/seed-shapes", json.load(open("models/seed-shapes/eval_metrics.json")))`."""
    copy = _mirror(SHAPES, tmp_path / "seed-shapes")
    stage_times = json.loads((SHAPES / "training_stage_times.json").read_text())
    written = write_shapes_cards(copy, _shipped_metrics(), stage_times)
    assert [path.relative_to(copy).as_posix() for path in written] == [
        "README.md",
        "visual_tokenizer/README.md",
        "detokenizer/README.md",
        "attribute_accuracy.png",
    ]
    for path in written[:-1]:
        relative = path.relative_to(copy)
        assert path.read_text() == (SHAPES / relative).read_text(), (
            f"{relative} differs from the rendered card"
        )
    assert np.array_equal(_pixels(written[-1]), _pixels(SHAPES / "attribute_accuracy.png"))
    assert (
        "![Accuracy per attribute, seen vs unseen combinations](attribute_accuracy.png)"
        in written[0].read_text()
    )
    # the stage times default to the folder's training_stage_times.json
    again = write_shapes_cards(copy, _shipped_metrics())
    cards = again[:-1]
    assert [path.read_text() for path in cards] == [(SHAPES / p.relative_to(copy)).read_text() for p in cards]
    # no temporary files left behind
    assert not [path for path in copy.rglob("*.tmp")]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _unseen_bar_pixels(metrics: dict) -> list[int]:
    """Per panel of the attribute chart, the pixels in the unseen series' colour (bars and legend swatch)."""
    pixels = np.asarray(shapes_attribute_chart(metrics).convert("RGB")).astype(int)
    unseen = np.array([int(COLOURS[1][i : i + 2], 16) for i in (1, 3, 5)])
    panels = np.array_split(pixels, len(ATTRIBUTE_CHART_TASKS))
    return [int((np.abs(panel - unseen).sum(-1) == 0).sum()) for panel in panels]


def test_the_attribute_chart_draws_each_tasks_unseen_rates_as_bar_heights():
    metrics = _shipped_metrics()
    for task in ATTRIBUTE_CHART_TASKS:
        rates = metrics["test_unseen"][task]
        rates = rates.get("per_question_type", rates)
        for name in ("background", "shape", "size", "color", "x", "y"):
            rates[name] = 0.0
    empty = _unseen_bar_pixels(metrics)  # the legend swatch alone
    assert len(set(empty)) == 1
    metrics["test_unseen"]["caption"]["shape"] = 0.5
    metrics["test_unseen"]["vqa"]["per_question_type"]["x"] = 1.0
    half, full = (count - empty[0] for count in _unseen_bar_pixels(metrics)[2:4])
    assert half > 0 and abs(full - 2 * half) <= full * 0.05  # one bar each, 1.0 twice as tall as 0.5
    assert _unseen_bar_pixels(metrics)[:2] + _unseen_bar_pixels(metrics)[4:] == [empty[0]] * 3
    # an attribute no VQA question asked about in a split is left out of that panel, not drawn as 0
    height = shapes_attribute_chart(metrics).height
    del metrics["test_unseen"]["vqa"]["per_question_type"]["background"]
    assert shapes_attribute_chart(metrics).height == height
    with pytest.raises(ValueError, match="metrics hold none of"):
        shapes_attribute_chart({"test_seen": {}, "test_unseen": {}})


def test_shapes_cards_list_only_the_parts_there_are(tmp_path):
    folder = _mirror(SHAPES, tmp_path / "seed-shapes")
    for part in ("image_text_model", "detokenizer"):
        if (folder / part).is_dir():
            for path in sorted((folder / part).rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            (folder / part).rmdir()
    metrics = _shipped_metrics()
    for split in SPLITS:
        metrics[split]["retrieval"] = None
    written = write_shapes_cards(folder, metrics, {})
    assert [path.relative_to(folder).as_posix() for path in written] == [
        "README.md",
        "visual_tokenizer/README.md",
        "attribute_accuracy.png",
    ]
    text = (folder / "README.md").read_text()
    assert "- `visual_tokenizer/`:" in text
    assert "- `detokenizer/`:" not in text and "- `image_text_model/`:" not in text
    assert "| retrieval R@1 (caption -> image) | n/a | n/a |" in text
    assert "Stage times were not recorded." in text
    results = _eval_results(ModelCard.load(folder / "README.md"))
    assert not [key for key in results if key[0] == "retrieval"]


def test_shapes_cards_describe_the_checkpoints_codebook(tmp_path):
    folder = _mirror(SHAPES, tmp_path / "seed-shapes")
    llm_config, tokenizer_config = folder / "config.json", folder / "visual_tokenizer" / "config.json"
    groups = [[6, 6], [5, 6], [5, 4], [6, 12], [5, 6], [5, 6]]
    llm_config.write_text(json.dumps({**json.loads(llm_config.read_text()), "num_image_codes": 40}))
    tokenizer_config.write_text(
        json.dumps({**json.loads(tokenizer_config.read_text()), "num_codes": 40, "code_groups": groups})
    )
    write_shapes_cards(folder, _shipped_metrics(), {})
    system, tokenizer = (
        (folder / "README.md").read_text(),
        (folder / "visual_tokenizer" / "README.md").read_text(),
    )
    assert "a 4-layer LLaMA with the 40 image codes in its vocabulary" in system
    assert "40-code codebook in 6 slices, one per attribute's group of positions" in system
    assert "image -> 32 causal codes from a 40-code codebook" in tokenizer
    assert (
        "form 6 groups\n(6, 5, 5, 6, 5, 5 positions" in tokenizer
        and "slice of\n6, 6, 4, 12, 6, 6 codes" in tokenizer
    )
    assert "# (1, 32) codes in [0, 40)" in tokenizer
    # a codebook shared by all positions has no slices to describe
    tokenizer_config.write_text(json.dumps({**json.loads(tokenizer_config.read_text()), "code_groups": None}))
    write_shapes_cards(folder, _shipped_metrics(), {})
    assert "slice" not in (folder / "visual_tokenizer" / "README.md").read_text()
    assert "40-code codebook);" in (folder / "README.md").read_text()


def test_converted_cards_name_the_official_repos_and_the_parity(tmp_path):
    folder = tmp_path / "seed-llama-8b-sft"
    for part in ("visual_tokenizer", "detokenizer"):
        (folder / part).mkdir(parents=True)
    written = write_converted_cards(folder, **OFFICIAL, parity=PARITY, repo_id="seed-hf/seed-llama-8b-sft")
    assert [path.relative_to(folder).as_posix() for path in written] == [
        "README.md",
        "visual_tokenizer/README.md",
        "detokenizer/README.md",
    ]
    expected = {
        "README.md": ("llm_repo", "transformers", "any-to-any", "llama2"),
        "visual_tokenizer/README.md": (
            "tokenizer_repo",
            "transformers",
            "image-feature-extraction",
            "llama2",
        ),
        "detokenizer/README.md": ("unclip_repo", "diffusers", "image-to-image", "openrail++"),
    }
    for name, (repo, library_name, pipeline_tag, license_id) in expected.items():
        card = ModelCard.load(folder / name)
        assert card.data.base_model == OFFICIAL[repo], name
        assert card.data.library_name == library_name, name
        assert card.data.pipeline_tag == pipeline_tag, name
        assert card.data.license == license_id, name
        assert BASE_TAGS <= set(card.data.tags), name
        # provenance: the official repo, the seed-hf version and the command
        assert f"https://huggingface.co/{OFFICIAL[repo]}" in card.text, name
        assert f"seed-hf {seed_hf_version()}" in card.text, name
        command = (
            f"seed-hf convert-release \\\n    --tokenizer {OFFICIAL['tokenizer_repo']} \\\n    "
            f"--llm {OFFICIAL['llm_repo']} \\\n    --unclip {OFFICIAL['unclip_repo']} \\\n    "
            "--output-dir seed-llama-8b-sft \\\n    --push-to-hub seed-hf/seed-llama-8b-sft\n"
        )
        assert command in card.text, name
        for check, result in PARITY.items():
            assert f"| {check} | {result} |" in card.text, (name, check)
    top = (folder / "README.md").read_text()
    assert "seed-hf convert-llama" in top and "chat template `vicuna`" in top
    assert "seed-hf convert-tokenizer" in (folder / "visual_tokenizer" / "README.md").read_text()
    assert 'AutoModel.from_pretrained("seed-hf/seed-llama-8b-sft")' in top


def test_converted_cards_of_a_bare_llm_folder(tmp_path):
    folder = tmp_path / "seed-llama-14b-sft"
    folder.mkdir()
    llm = {**OFFICIAL, "llm_repo": "AILab-CVC/seed-llama-14b-sft"}
    written = write_converted_cards(folder, **llm, parity={})
    assert written == [folder / "README.md"]
    card = ModelCard.load(written[0])
    assert card.data.base_model == "AILab-CVC/seed-llama-14b-sft"
    assert "chat template `llama2`" in card.text
    assert "--output-dir seed-llama-14b-sft\n" in card.text and "--push-to-hub" not in card.text
    assert "No parity checks were recorded" in card.text
    assert "`visual_tokenizer/`" not in card.text


def test_model_cards_are_installed_with_their_templates(tmp_path):
    code = (
        "import importlib.util, json, pathlib, seed_hf.model_cards as m; "
        "folder = pathlib.Path(m.__file__).parent; "
        "print(json.dumps([importlib.util.find_spec('model_cards') is None, "
        "sorted(p.name for p in folder.glob('*.md'))]))"
    )
    # run from outside the checkout so that only the installed package is importable
    env = {**os.environ, "PYTHONPATH": ""}
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    not_top_level, templates = json.loads(output)
    assert not_top_level
    assert {"shapes_system.md", "shapes_visual_tokenizer.md", "shapes_detokenizer.md"} <= set(templates)
    assert {"converted_system.md", "converted_visual_tokenizer.md", "converted_detokenizer.md"} <= set(
        templates
    )


def test_shapes_cards_show_a_task_only_when_its_evaluation_has_it(tmp_path):
    folder = _mirror(SHAPES, tmp_path / "seed-shapes")
    metrics = _shipped_metrics()
    for split in SPLITS:
        metrics[split].pop("clip_qa", None)
    write_shapes_cards(folder, metrics, {})
    assert "| clip QA accuracy |" not in (folder / "README.md").read_text()
    metrics["test_seen"]["clip_qa"] = {"accuracy": 0.875}
    write_shapes_cards(folder, metrics, {})
    text = (folder / "README.md").read_text()
    assert "| clip QA accuracy | 87.5% | n/a |" in text
    assert _eval_results(ModelCard.load(folder / "README.md"))[("clip_qa", "test_seen", "accuracy")] == 0.875
