"""The SEED-Shapes evaluation command and the main job, on a smoke-schedule checkpoint and on stand-in models whose
answers are known (right or wrong by construction), so the scoring itself is checked."""

from __future__ import annotations

import contextlib
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from seed_hf.training import shapes
from seed_hf.training.shapes import evaluate as shapes_eval
from seed_hf.training.shapes.evaluate import GRID_CELL, ShapesEvaluator, check_acceptance, make_grid
from seed_hf.training.shapes.sequence_texts import CLIP_QUESTIONS, COMPOSITION_INSTRUCTIONS, COMPOSITIONS
from seed_hf.training.shapes.texts import SHAPE_WORDS

NUM_SAMPLES = 3


@pytest.fixture(scope="module")
def metrics(shapes_smoke_checkpoint, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("metrics")
    stderr = io.StringIO()  # the progress bar's output, kept for its test
    with contextlib.redirect_stderr(stderr):
        status = shapes_eval.main(
            [
                "--model",
                str(shapes_smoke_checkpoint),
                "--image-text-model",
                str(shapes_smoke_checkpoint.parent / "tokenizer_stage1" / "image_text_model"),
                "--output-dir",
                str(output_dir),
                "--num-samples",
                str(NUM_SAMPLES),
            ]
        )
    assert status == 0
    (output_dir / "stderr.txt").write_text(stderr.getvalue())
    return output_dir


def test_the_evaluation_shows_its_progress(metrics):
    progress = (metrics / "stderr.txt").read_text()
    steps = len(shapes_eval.SPLITS) * len(shapes_eval.TASKS)
    assert "evaluate-shapes: 100%" in progress and f"{steps}/{steps}" in progress


def test_metrics_cover_every_task_for_both_splits(metrics):
    values = json.loads((metrics / "metrics.json").read_text())
    for split, gallery in (("test_seen", 875), ("test_unseen", 97)):
        result = values[split]
        assert set(result) == {
            "text_to_image",
            "caption",
            "vqa",
            "edit",
            "reconstruction",
            "retrieval",
            "valid_images",
            "tokenizer_bf16_code_agreement",
            "clip_qa",
            "composition",
            "in_context_edit",
        }
        for task in ("text_to_image", "edit", "reconstruction", "composition", "in_context_edit"):
            assert result[task]["count"] == NUM_SAMPLES
            assert set(shapes.ATTRIBUTE_NAMES) | {"all", "valid"} <= set(result[task])
        # constrained decoding always yields one complete image, even from the untrained smoke model; the pipeline's
        # answers start with one (the smoke model may write a second one after it, which the rate counts)
        assert result["valid_images"]["constrained"] == 1.0
        one_image_rate = result["text_to_image"]["one_image_rate"]
        assert 0 <= one_image_rate <= 1 and (one_image_rate * NUM_SAMPLES).is_integer()
        assert result["retrieval"]["gallery"] == gallery and result["retrieval"]["queries"] == NUM_SAMPLES
        # the retrieval model's causal Q-Former is the shipped tokenizer's
        assert result["retrieval"]["causal_embedding_max_difference_vs_shipped_tokenizer"] == 0.0
        assert result["tokenizer_bf16_code_agreement"]["positions"] == NUM_SAMPLES * 32
        assert result["clip_qa"]["count"] == NUM_SAMPLES and 0 <= result["clip_qa"]["accuracy"] <= 1
    assert set(check_acceptance(values)) and all(
        isinstance(v, bool) for v in check_acceptance(values).values()
    )


def test_the_grid_has_a_row_per_split_and_task(metrics):
    grid = Image.open(metrics / "grid.png")
    # per split: truth + text-to-image, truth + reconstruction, edit input + output, composition, in-context edit
    assert grid.size == (200 + NUM_SAMPLES * GRID_CELL, 16 * GRID_CELL)


def _read_combination(image) -> dict[str, str]:
    from seed_hf.training.shapes.reader import read_attributes

    return {key: value for key, value in read_attributes(image).items() if key in shapes.ATTRIBUTE_NAMES}


def _template_pattern(template: str, **slots: str) -> re.Pattern:
    """`template` as a regular expression whose `{slot}`s match `slots[slot]` (a regex) and nothing else varies."""
    parts = re.split(r"(\{\w+\})", template)
    return re.compile(
        "".join(slots[part[1:-1]] if part.startswith("{") else re.escape(part) for part in parts),
        re.IGNORECASE,
    )


def _composition_target(images, instruction: str) -> dict[str, str]:
    """What a composition instruction asks for, found by matching it against the world's templates."""
    instruction = instruction.rstrip(".!")
    name = "(?P<{}>(?:the )?(?:first|second) (?:image|picture)|image [12])"
    for kind, templates in COMPOSITION_INSTRUCTIONS.items():
        for template in templates:
            match = _template_pattern(
                template, base=name.format("base"), donor=name.format("donor")
            ).fullmatch(instruction)
            if match:
                base, donor = (
                    _read_combination(images[0 if re.search("first|1", match[slot]) else 1])
                    for slot in ("base", "donor")
                )
                return {**base, **{attribute: donor[attribute] for attribute in COMPOSITIONS[kind]}}
    raise AssertionError(f"no composition template matches {instruction!r}")


def _in_context_target(images) -> dict[str, str]:
    """The query with the one attribute change that the first example shows."""
    source, result = _read_combination(images[0]), _read_combination(images[1])
    return {**_read_combination(images[-1]), **{k: v for k, v in result.items() if source[k] != v}}


def _clip_answer(frames, question: str) -> str:
    """The canonical answer to a clip question, its type found by matching the world's templates."""
    shape_words = "|".join(re.escape(word) for words in SHAPE_WORDS.values() for word in words)
    attributes = [shapes.as_attributes(_read_combination(frame)) for frame in frames]
    for templates, answer in CLIP_QUESTIONS.values():
        if any(
            _template_pattern(template, shape=f"(?:{shape_words})").fullmatch(question)
            for template in templates
        ):
            return answer(attributes)
    raise AssertionError(f"no clip question template matches {question!r}")


def _split_content(prompt) -> tuple[list, list[str]]:
    content = [item for message in prompt for item in message["content"]]
    return [item["image"] for item in content if item["type"] == "image"], [
        item["text"] for item in content if item["type"] == "text"
    ]


class _PerfectDrawer:
    """Stands in for `seed-text-to-image`: draws exactly what a caption, an edit instruction, a composition or an
    in-context edit asks (or, when `wrong`, always the same combination)."""

    def __init__(self, wrong: bool = False):
        self.wrong = wrong
        self.model = SimpleNamespace(config=SimpleNamespace(tokens_per_image=32))
        self.force_image_by_input_images = set()  # (input images, force_image) of every prompt

    def __call__(self, prompts, force_image=True, **kwargs):
        outputs = []
        for prompt in prompts:
            input_images = 0 if isinstance(prompt, str) else len(_split_content(prompt)[0])
            self.force_image_by_input_images.add((min(input_images, 2), force_image))
            if self.wrong:
                target = 0
            elif isinstance(prompt, str):
                target = shapes.as_attributes(shapes.parse_caption(prompt))
            else:
                images, prompt_texts = _split_content(prompt)
                if len(images) == 1:
                    target = shapes.parse_edit_instruction(prompt_texts[0], _read_combination(images[0]))
                elif len(images) == 2:
                    target = _composition_target(images, prompt_texts[0])
                else:
                    target = _in_context_target(images)
            outputs.append({"images": [shapes.render(target)], "image_codes": [None]})
        return outputs


class _PerfectReader:
    """Stands in for `seed-image-to-text`: captions an image by reading its pixels, answers a clip question from
    its frames' pixels."""

    def __call__(self, inputs, **kwargs):
        answers = []
        for item in inputs:
            if isinstance(item, list):
                frames, (question,) = _split_content(item)
                answers.append([{"generated_text": _clip_answer(frames, question)}])
                continue
            attributes = _read_combination(item["image"] if isinstance(item, dict) else item)
            answers.append([{"generated_text": shapes.make_caption(attributes, np.random.default_rng(0))}])
        return answers


@pytest.mark.parametrize("wrong", [False, True])
def test_scores_follow_the_answers(shapes_smoke_checkpoint, monkeypatch, wrong):
    drawer = _PerfectDrawer(wrong)
    monkeypatch.setattr(shapes_eval, "load_shapes_pipelines", lambda model_dir: (drawer, _PerfectReader()))
    evaluator = ShapesEvaluator(shapes_smoke_checkpoint, num_samples=20, seed=1)
    for split in shapes_eval.SPLITS:
        text_to_image, _ = evaluator.evaluate_text_to_image(split)
        edit, _ = evaluator.evaluate_edit(split)
        composition, _ = evaluator.evaluate_composition(split)
        in_context_edit, _ = evaluator.evaluate_in_context_edit(split)
        caption = evaluator.evaluate_caption(split)
        assert caption["all"] == 1.0 and caption["mean"] == 1.0
        assert evaluator.evaluate_clip_qa(split)["accuracy"] == 1.0
        if wrong:
            assert text_to_image["all"] == 0.0 and edit["all"] < 0.1
            assert composition["all"] < 0.1 and in_context_edit["all"] < 0.1
        else:
            assert text_to_image["all"] == 1.0 and text_to_image["valid"] == 1.0
            assert edit["all"] == 1.0 and edit["edited_attribute"] == 1.0
            assert composition["all"] == 1.0 and set(composition["all_per_composition"].values()) == {1.0}
            assert in_context_edit["all"] == 1.0
    # text-to-image and edits start with the image; compositions and in-context edits describe it first
    assert drawer.force_image_by_input_images == {(0, True), (1, True), (2, False)}


def test_bad_arguments(shapes_smoke_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="`num_samples` must be a positive int, got 0"):
        ShapesEvaluator(shapes_smoke_checkpoint, num_samples=0)
    with pytest.raises(ValueError, match="`model_dir` must be a SEED checkpoint folder"):
        ShapesEvaluator(tmp_path)


def test_make_grid_crosses_out_a_missing_image():
    grid = make_grid([("row", [shapes.render(0), None])], cell=32)
    assert grid.size == (200 + 64, 32)
    pixels = np.asarray(grid)
    assert (pixels[16, 200 + 32 + 16] == (255, 0, 0)).all()  # the diagonal of the empty cell


def test_main_job_writes_images_and_a_report(shapes_smoke_checkpoint, tmp_path):
    from seed_hf.main_job import main

    assert main(["--model", str(shapes_smoke_checkpoint), "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    names = [entry["image"] for entry in report["text_to_image"] + report["dialogue"]] + [
        report["edit"]["output"]
    ]
    assert len(names) == 6
    for name in [*names, "example.png"]:
        assert Image.open(tmp_path / name).size == (64, 64)
    assert isinstance(report["caption"]["caption"], str) and isinstance(report["vqa"]["answer"], str)
    assert report["edit"]["expected"]["color"] == "orange"
    assert (tmp_path / "report.md").read_text().startswith("# SEED-Shapes demo")


def test_model_cards_carry_the_measured_figures(shapes_smoke_checkpoint, metrics, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    folder = tmp_path / "seed_shapes"
    shutil.copytree(shapes_smoke_checkpoint, folder)
    (folder / "training_stage_times.json").write_text(
        json.dumps({"teacher": 60.0, "vae": 100.0, "decoder": 1200.0})
    )
    values = json.loads((metrics / "metrics.json").read_text())
    written = shapes_eval.write_shapes_model_cards(folder, values)
    assert {path.relative_to(folder).as_posix() for path in written} == {
        "README.md",
        "visual_tokenizer/README.md",
        "detokenizer/README.md",
        "eval_metrics.json",
        "attribute_accuracy.png",
    }
    card = (folder / "README.md").read_text()
    data = ModelCard.load(folder / "README.md").data
    assert (data.license, data.library_name, data.pipeline_tag) == (
        "apache-2.0",
        "transformers",
        "any-to-any",
    )
    reconstruction = {
        result.dataset_split: result.metric_value
        for result in data.eval_results
        if result.dataset_config == "reconstruction"
    }
    assert reconstruction == {
        split: pytest.approx(values[split]["reconstruction"]["all"], abs=5e-5)
        for split in ("test_seen", "test_unseen")
    }
    seen, unseen = values["test_seen"], values["test_unseen"]
    row = (
        f"| reconstruction: all attributes kept | {100 * seen['reconstruction']['all']:.1f}% | "
        f"{100 * unseen['reconstruction']['all']:.1f}% |"
    )
    assert row in card
    assert "| sum | 1360 (22.7 min) |" in card
    # the VAE and the teacher run side by side; the decoder needs both
    longest = "(longest chain: data -> vae -> decoder -> seed_shapes) | **1300 (21.7 min)** |"
    assert f"| **wall time, two processes** {longest}" in card
    assert json.loads((folder / "eval_metrics.json").read_text()) == values
    assert "reconstruction" in (folder / "visual_tokenizer" / "README.md").read_text()


def test_retrieval_loads_the_stage_one_model_without_warnings(shapes_smoke_checkpoint, caplog):
    evaluator = ShapesEvaluator(
        shapes_smoke_checkpoint,
        num_samples=2,
        seed=1,
        image_text_model=shapes_smoke_checkpoint.parent / "tokenizer_stage1" / "image_text_model",
    )
    caplog.clear()
    result = evaluator.evaluate_retrieval("test_unseen")
    assert result["gallery"] == 97
    assert "instantiate a model of type" not in caplog.text
