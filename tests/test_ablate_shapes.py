"""`seed-hf ablate-shapes`: the bilateral Q-Former option of the SEED tokenizer, both ablations end to end on the smoke
schedule (shared stages trained once, a rerun resumes without retraining), the scoring of the measures and the
command's bad inputs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from run_outputs import assert_same_weights
from seed_llama_fixtures import tiny_visual_tokenizer_config

from seed_hf import cli
from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
from seed_hf.training.shapes.ablate import ABLATIONS, AblationRun, ablate_shapes
from seed_hf.training.shapes.ablate_measures import ArmMeasures
from seed_hf.training.shapes.run import STAGE_TIMES_FILE, STAGES

NUM_SAMPLES = 3
# one torch thread, as train-shapes on a busy machine: two OpenMP threads on two busy cores ran 40x slower
SMOKE = ["--schedule", "smoke", "--num-samples", str(NUM_SAMPLES), "--set", "num_threads=1"]


# ----------------------------------------------------------------------------------------- the bilateral option
@pytest.mark.parametrize("causal", [True, False])
def test_a_bilateral_query_sees_the_later_queries_and_a_causal_one_does_not(causal):
    torch.manual_seed(0)
    model = SeedTokenizerModel(tiny_visual_tokenizer_config(causal_query_attention=causal)).eval()
    pixel_values = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        before = model.causal_embeddings(pixel_values)
        model.query_tokens[:, 20] += 1.0
        after = model.causal_embeddings(pixel_values)
    assert torch.equal(after[:, :20], before[:, :20]) is causal
    assert not torch.allclose(after[:, 20:], before[:, 20:])


def test_the_query_attention_option_is_saved_and_old_configs_stay_causal(tmp_path):
    assert SeedTokenizerConfig().causal_query_attention is True
    model = SeedTokenizerModel(tiny_visual_tokenizer_config(causal_query_attention=False))
    model.save_pretrained(tmp_path / "bilateral")
    assert json.loads((tmp_path / "bilateral" / "config.json").read_text())["causal_query_attention"] is False
    assert SeedTokenizerModel.from_pretrained(tmp_path / "bilateral").config.causal_query_attention is False
    # a checkpoint saved before the option existed (no key) loads causal, as it was trained
    config = json.loads((tmp_path / "bilateral" / "config.json").read_text())
    del config["causal_query_attention"]
    (tmp_path / "bilateral" / "config.json").write_text(json.dumps(config))
    assert SeedTokenizerConfig.from_pretrained(tmp_path / "bilateral").causal_query_attention is True


def test_the_arms_differ_only_in_the_ablated_values():
    def flat(value, prefix=""):
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            return {
                key: item
                for name, child in value.items()
                for key, item in flat(child, f"{prefix}{name}.").items()
            }
        return {prefix[:-1]: value}

    expected = {
        "causal-vs-bilateral": {"tokenizer_stage1.config.causal_query_attention": (True, False)},
        "lora-vs-full": {"llm.lora.training.max_steps": (250, 1000)},
    }
    for name, differences in expected.items():
        first, second = (flat(recipe) for recipe in AblationRun("unused", name).recipes.values())
        changed = {
            key: (first.get(key), second.get(key))
            for key in first | second
            if first.get(key) != second.get(key)
        }
        assert changed == differences, name


def test_the_second_arm_trains_only_its_own_stages_on_the_first_arms_shared_ones():
    tasks = AblationRun("unused", "lora-vs-full").tasks()
    own = [task for task in tasks if task.startswith("lora_only/")]
    assert own == [
        "lora_only/llm_lora",
        "lora_only/llm_merged",
        "lora_only/llm_sft",
        "lora_only/llm_sequences",
        "lora_only/seed_shapes",
    ]
    # no full stage: the SFT starts from the merged LoRA model
    assert tasks["lora_only/llm_sft"] == ["lora_only/llm_merged", "lora_then_full/tokenized"]
    assert tasks["lora_only/seed_shapes"] == [
        "lora_only/llm_sequences",
        "lora_then_full/decoder",
        "lora_then_full/tokenizer_stage2",
    ]


# ----------------------------------------------------------------------------------------- end to end
def run_ablation(output_dir: Path, *arguments: str) -> tuple[int, str]:
    error = io.StringIO()
    with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["ablate-shapes", *arguments, "--output-dir", str(output_dir)])
    return code, error.getvalue()


def snapshot(output_dir: Path, arms) -> dict[str, tuple[str, int]]:
    """Each arm's stage times and the time its measures were written."""
    return {
        arm: (
            (output_dir / arm / STAGE_TIMES_FILE).read_text(),
            (output_dir / arm / "ablation_measures.json").stat().st_mtime_ns,
        )
        for arm in arms
    }


@pytest.fixture(scope="module")
def causal_vs_bilateral(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablate")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(folder / "datasets_cache"))
        assert run_ablation(folder / "out", "causal-vs-bilateral", *SMOKE)[0] == 0
        first = snapshot(folder / "out", ("causal", "bilateral"))
        assert run_ablation(folder / "out", "causal-vs-bilateral", *SMOKE)[0] == 0
    return {
        "output_dir": folder / "out",
        "first": first,
        "rerun": snapshot(folder / "out", ("causal", "bilateral")),
    }


def test_causal_vs_bilateral_reports_both_arms(causal_vs_bilateral):
    output_dir = causal_vs_bilateral["output_dir"]
    results = json.loads((output_dir / "results.json").read_text())
    assert results["ablation"] == "causal-vs-bilateral" and list(results["arms"]) == ["causal", "bilateral"]
    assert results["command"].startswith("seed-hf ablate-shapes causal-vs-bilateral --schedule smoke")
    for arm in ("causal", "bilateral"):
        measures = results["arms"][arm]["measures"]
        assert list(measures) == ["complete_images", "codes_unconstrained", "codes_constrained"]
        complete = measures["complete_images"]
        assert complete["total"] == NUM_SAMPLES and complete["rate"] == complete["count"] / NUM_SAMPLES
        for name in ("codes_unconstrained", "codes_constrained"):
            assert measures[name]["positions"] == NUM_SAMPLES * 32 and 0 <= measures[name]["agreement"] <= 1
        # an answer without a complete image has no right code
        assert measures["codes_unconstrained"]["count"] <= complete["count"]
    table = (output_dir / "results.md").read_text()
    assert "| complete images, constraints off |" in table
    assert "Skipped: text-to-image all attributes (pixels): the decoder is not trained here" in table
    for arm in ("causal", "bilateral"):
        (row,) = [line for line in table.splitlines() if line.startswith(f"| {arm} |")]
        assert (
            row.endswith("| skipped |")
            and f"({results['arms'][arm]['measures']['complete_images']['count']}/3)" in row
        )
    assert results["command"] in table
    with Image.open(output_dir / "results.png") as chart:
        assert chart.format == "PNG" and chart.width > 200


def test_each_arm_has_its_own_tokenizer_and_the_shared_stages_are_trained_once(causal_vs_bilateral):
    output_dir = causal_vs_bilateral["output_dir"]
    for arm, causal in (("causal", True), ("bilateral", False)):
        for stage in ("tokenizer_stage2", "seed_shapes/visual_tokenizer"):
            config = json.loads((output_dir / arm / stage / "config.json").read_text())
            assert config["causal_query_attention"] is causal
    shared = ABLATIONS["causal-vs-bilateral"].shared_stages
    for stage in STAGES:
        files = sorted(
            path.relative_to(output_dir / "causal") for path in (output_dir / "causal" / stage).rglob("*.*")
        )
        assert files
        same = [
            os.path.samefile(output_dir / "causal" / file, output_dir / "bilateral" / file) for file in files
        ]
        assert all(same) if stage in shared else not any(same), stage
    times = {
        arm: json.loads((output_dir / arm / STAGE_TIMES_FILE).read_text()) for arm in ("causal", "bilateral")
    }
    assert set(times["causal"]) == set(STAGES) and set(times["bilateral"]) == set(STAGES) - set(shared)


def test_a_rerun_resumes_without_training_or_measuring_again(causal_vs_bilateral):
    assert causal_vs_bilateral["rerun"] == causal_vs_bilateral["first"]


@pytest.fixture(scope="module")
def lora_vs_full(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablate_lora")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(folder / "datasets_cache"))
        ablate_shapes(folder / "out", "lora-vs-full", "smoke", ["num_threads=1"], num_samples=NUM_SAMPLES)
    return folder / "out"


def test_lora_only_trains_lora_for_both_stage_budgets_and_skips_the_full_stage(lora_vs_full):
    run = AblationRun(lora_vs_full, "lora-vs-full", "smoke")
    steps = {arm: recipe.llm.lora.training["max_steps"] for arm, recipe in run.recipes.items()}
    assert steps == {"lora_then_full": 2, "lora_only": 2 + 2}
    for arm, last in steps.items():
        checkpoints = sorted(
            path.name for path in (lora_vs_full / arm / "checkpoints" / "llm_lora").iterdir()
        )
        assert checkpoints[-1] == f"checkpoint-{last}"
    merged, full = lora_vs_full / "lora_only" / "llm_merged", lora_vs_full / "lora_only" / "llm_full"
    assert os.path.samefile(merged / "model.safetensors", full / "model.safetensors")
    assert not os.path.samefile(
        lora_vs_full / "lora_then_full" / "llm_full" / "model.safetensors", full / "model.safetensors"
    )
    times = json.loads((lora_vs_full / "lora_only" / STAGE_TIMES_FILE).read_text())
    assert set(times) == {"llm_lora", "llm_merged", "llm_sft", "llm_sequences", "seed_shapes"}


def test_lora_vs_full_reports_losses_and_accuracies(lora_vs_full):
    results = json.loads((lora_vs_full / "results.json").read_text())
    assert results["command"] is None and results["skipped"] == {}
    for arm in ("lora_then_full", "lora_only"):
        measures = results["arms"][arm]["measures"]
        assert set(measures) == set(ABLATIONS["lora-vs-full"].measures)
        for name in ("text_to_image", "caption", "vqa"):
            assert measures[name]["count"] == NUM_SAMPLES
        for loss in measures["held_out_loss"].values():
            assert loss["loss"] > 0 and loss["tokens"] > 0
        assert measures["held_out_loss"]["chat_after_sft"]["sequences"] == 2 * NUM_SAMPLES
    assert "| held-out chat loss after SFT |" in (lora_vs_full / "results.md").read_text()


# ----------------------------------------------------------------------------------------- scoring
def test_code_scores_count_a_missing_or_wrong_code_against_the_arm(causal_vs_bilateral):
    output_dir = causal_vs_bilateral["output_dir"]
    recipe = AblationRun(output_dir, "causal-vs-bilateral", "smoke").recipes["causal"]
    measures = ArmMeasures(output_dir / "causal", recipe, NUM_SAMPLES)
    targets = measures._encode(measures._prompts["image"])
    one_off = targets[2].clone()
    one_off[5] = (one_off[5] + 1) % measures.model.config.num_image_codes
    # stand-in generations whose right and wrong answers are known
    measures._generations = {False: [None, targets[1], one_off], True: list(targets)}
    assert measures.measure("complete_images") == {"rate": 2 / 3, "count": 2, "total": 3}
    unconstrained = measures.measure("codes_unconstrained")
    assert unconstrained["count"] == 1 and unconstrained["agreement"] == pytest.approx((0 + 1 + 31 / 32) / 3)
    assert measures.measure("codes_constrained") == {
        "rate": 1.0,
        "count": 3,
        "total": 3,
        "agreement": 1.0,
        "positions": 96,
    }


def test_the_held_out_loss_is_the_models_own_loss(causal_vs_bilateral):
    output_dir = causal_vs_bilateral["output_dir"]
    recipe = AblationRun(output_dir, "causal-vs-bilateral", "smoke").recipes["causal"]
    measures = ArmMeasures(output_dir / "causal", recipe, NUM_SAMPLES)
    (record,) = measures._chat_records()[:1]
    loss = measures._loss(measures.model, [record])
    from seed_hf.training.llm_data import SeedLlamaSequenceBuilder
    from seed_hf.training.llm_training import resolve_chat_template

    builder = SeedLlamaSequenceBuilder(
        measures.processor.tokenizer,
        measures.model.image_token_layout,
        chat_template=resolve_chat_template("vicuna"),
    )
    sequence = builder(record, 0)
    with torch.no_grad():
        expected = measures.model(
            input_ids=torch.tensor([sequence["input_ids"]]), labels=torch.tensor([sequence["labels"]])
        ).loss
    assert loss["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert loss["tokens"] == sum(label != -100 for label in sequence["labels"][1:])


# ----------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["paint-by-numbers"], "invalid choice: 'paint-by-numbers'"),
        (["lora-vs-full", "--set", "sead=1"], "unknown key 'sead' at the top level (did you mean 'seed'?)"),
        (
            ["lora-vs-full", "--schedule", "tiny"],
            "`schedule` must be one of ('smoke', 'ablation', 'full') or a",
        ),
        (["lora-vs-full", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["lora-vs-full", "--num-samples", "0"], "--num-samples must be at least 1, got 0"),
        (
            ["lora-vs-full", "--set", "llm.full.training.max_steps=-1"],
            "`llm.full.training.max_steps` must be set",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, arguments, message):
    code, error = run_ablation(tmp_path / "out", *arguments)
    assert code == 2 and "Traceback" not in error
    assert message in error.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_help_lists_the_ablations_and_the_recipe_fields(capsys):
    assert cli.main(["ablate-shapes", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "{causal-vs-bilateral,lora-vs-full}" in printed and "llm.sft.training.*" in printed
    assert "tokenizer_stage1.config" in printed


def test_an_unknown_ablation_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"^`ablation` must be one of \['causal-vs-bilateral', 'lora-vs-full'\], got 'x'$"
    ):
        AblationRun("unused", "x")


@pytest.mark.slow
def test_parallel_arms_give_the_weights_of_a_sequential_run(causal_vs_bilateral, tmp_path, monkeypatch):
    # --jobs 2: every stage in its own process, the two arms side by side; the same weights as one process
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    assert run_ablation(tmp_path / "out", "causal-vs-bilateral", *SMOKE, "--jobs", "2")[0] == 0
    for arm in ("causal", "bilateral"):
        assert assert_same_weights(tmp_path / "out" / arm, causal_vs_bilateral["output_dir"] / arm) >= 10
