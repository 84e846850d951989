"""SEED tokenizer training, stages 1 and 2: losses against independent computations, CLI runs on tiny
recipes (loss falls on a fixed batch), export, resume, and one process vs two processes."""

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval, TrainerCallback

from seed_hf.cli import main as cli
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
from seed_hf.training.recipes import RECIPES_DIR
from seed_hf.training.tokenizer_models import (
    SeedTokenizerContrastiveConfig,
    SeedTokenizerForImageTextContrastive,
    attribute_group_loss,
)
from seed_hf.training.tokenizer_stages import (
    TeacherArguments,
    build_trainer,
    load_recipe,
    train_tokenizer,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] a small big red green blue yellow square circle".split()


def shape_image(colour, shape: str, half_size: int) -> Image.Image:
    pixels = np.full((28, 28, 3), 255, np.uint8)
    rows, columns = np.mgrid[:28, :28]
    if shape == "square":
        inside = (abs(rows - 14) < half_size) & (abs(columns - 14) < half_size)
    else:
        inside = (rows - 14) ** 2 + (columns - 14) ** 2 < half_size**2
    pixels[inside] = colour
    return Image.fromarray(pixels)


def write_image_folder(folder: Path, sizes: dict[str, int]) -> None:
    folder.mkdir(parents=True)
    lines = []
    for colour_name, colour in COLOURS.items():
        for shape in ("square", "circle"):
            for size_name, half_size in sizes.items():
                name = f"{colour_name}-{shape}-{size_name}.png"
                shape_image(colour, shape, half_size).save(folder / name)
                record = {"file_name": name, "text": f"a {size_name} {colour_name} {shape}"}
                lines.append(json.dumps({**record, "colour": colour_name, "shape": shape}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer_training")
    write_image_folder(folder / "eight", {"big": 9})  # one fixed batch of 8
    write_image_folder(folder / "sixteen", {"big": 9, "small": 5})
    BertTokenizer(vocab={word: index for index, word in enumerate(WORDS)}).save_pretrained(
        folder / "text_tokenizer"
    )
    with pytest.MonkeyPatch.context() as patch:  # keep the datasets cache of these runs out of the user's
        patch.setenv("HF_DATASETS_CACHE", str(folder / "datasets_cache"))
        yield folder


def stage1_overrides(workspace: Path, output: str, data: str = "eight") -> list[str]:
    return [
        f"data.source={workspace / data}",
        f"text_tokenizer={workspace / 'text_tokenizer'}",
        f"training.output_dir={workspace / output}",
    ]


def logged(output_dir: Path) -> list[dict]:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


def first_batch(trainer) -> dict[str, torch.Tensor]:
    dataset = trainer.train_dataset
    return trainer.data_collator([dataset[index] for index in range(len(dataset))])


# ---------------------------------------------------------------------------------------------- stage 1
def tiny_blip2_config(stage1_config: SeedTokenizerContrastiveConfig) -> Blip2Config:
    return Blip2Config(
        vision_config=stage1_config.vision_config.to_dict(),
        qformer_config={**stage1_config.qformer_config.to_dict(), "use_qformer_text_input": True},
        num_query_tokens=32,
        image_text_hidden_size=stage1_config.image_text_hidden_size,
    )


def test_stage1_loss_is_the_itc_of_the_last_causal_query_and_blip2s_text_tower(workspace):
    trainer, _ = build_trainer(load_recipe("tokenizer_stage1_tiny", stage1_overrides(workspace, "unused")))
    config = trainer.model.config
    torch.manual_seed(1)
    blip2 = Blip2ForImageTextRetrieval(tiny_blip2_config(config)).eval()
    model = SeedTokenizerForImageTextContrastive.from_blip2_state_dict(config, blip2.state_dict()).eval()
    with torch.no_grad():
        model.temperature.fill_(0.05)
    batch = first_batch(trainer)
    with torch.no_grad():
        output = model(**batch)
        # text side: transformers' own BLIP-2 ITC text embedding (the [CLS] of the Q-Former's text tower)
        text = blip2(**batch, use_image_text_matching_head=False).text_embeds
        # image side: the LAST causal query of the tokenizer, through BLIP-2's vision projection
        causal = model.seed_tokenizer.causal_embeddings(batch["pixel_values"])
        image = F.normalize(blip2.vision_projection(causal[:, -1]), dim=-1)
    torch.testing.assert_close(output.text_embeds, text)
    torch.testing.assert_close(output.image_embeds, image)
    logits = image @ text.t() / 0.05
    targets = torch.arange(len(logits))

    def smoothed_cross_entropy(scores):  # label smoothing 0.1, written out
        log_probabilities = scores.log_softmax(-1)
        nll = -log_probabilities[targets, targets]
        return (0.9 * nll - 0.1 * log_probabilities.mean(-1)).mean()

    expected = (smoothed_cross_entropy(logits) + smoothed_cross_entropy(logits.t())) / 2
    torch.testing.assert_close(output.loss, expected)


def test_stage1_teacher_distillation_adds_one_minus_cosine_to_the_teacher(workspace):
    """With `teacher_distillation_weight`, the loss is the ITC plus weight * (1 - cos) between a linear head on the
    last causal query and the teacher's image embedding; the head and the teacher stay out of the export."""
    # the recipe's 28 px images and 16-d generation embedding
    teacher = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    teacher |= {"image_size": 28, "patch_size": 14, "projection_dim": 16}
    overrides = [
        *stage1_overrides(workspace, "distilled"),
        "model.settings.teacher_distillation_weight=2.5",
        "model.vision_position_embedding_std=1.0",
        *(f"teacher.config.{key}={value}" for key, value in teacher.items()),
    ]
    recipe = load_recipe("tokenizer_stage1_tiny", overrides)
    trainer, _ = build_trainer(recipe)
    model = trainer.model.eval()
    assert float(model.seed_tokenizer.vision_model.embeddings.position_embedding.std()) > 0.5
    batch = first_batch(trainer)
    with torch.no_grad():
        output = model(**batch)
        last_query = model.seed_tokenizer.causal_embeddings(batch["pixel_values"])[:, -1]
        target = model.teacher(pixel_values=batch["pixel_values"]).image_embeds
        expected = (1 - F.cosine_similarity(model.teacher_projection(last_query), target, dim=-1)).mean()
    torch.testing.assert_close(output.distillation_loss, expected)
    torch.testing.assert_close(output.loss, output.contrastive_loss + 2.5 * expected)
    exported = model.export_tokenizer().state_dict()
    assert not any(key.startswith(("teacher", "teacher_projection")) for key in exported)
    # a plain stage 1 has neither the head nor the term
    plain, _ = build_trainer(load_recipe("tokenizer_stage1_tiny", stage1_overrides(workspace, "unused")))
    assert not hasattr(plain.model, "teacher_projection")
    assert plain.model(**first_batch(plain)).distillation_loss is None
    with pytest.raises(
        ValueError, match="teacher_distillation_weight needs a 'teacher' needs exactly one of"
    ):
        dataclasses.replace(recipe, teacher=TeacherArguments()).validate()


@pytest.fixture(scope="module")
def stage1_run(workspace):
    overrides = stage1_overrides(workspace, "stage1") + [f"export_dir={workspace / 'stage1_export'}"]
    assert (
        cli(["train-tokenizer", "--recipe", "tokenizer_stage1_tiny", *[f"--set={o}" for o in overrides]]) == 0
    )
    return workspace / "stage1", workspace / "stage1_export"


def test_stage1_loss_falls_on_a_fixed_batch_and_logs_its_terms(stage1_run):
    logs = logged(stage1_run[0])
    assert [entry["step"] for entry in logs] == list(range(1, 9))
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    for entry in logs:
        assert entry["contrastive_loss"] == pytest.approx(entry["loss"], rel=1e-6)
    assert logs[0]["temperature"] == pytest.approx(0.07) and logs[-1]["temperature"] != pytest.approx(0.07)


def test_stage1_export_is_the_trained_tokenizer_with_the_vision_tower_untouched(workspace, stage1_run):
    output_dir, export_dir = stage1_run
    exported = SeedTokenizerModel.from_pretrained(export_dir)
    assert not exported.config.qformer_config.use_qformer_text_input
    trained = load_file(output_dir / "checkpoint-8" / "model.safetensors")
    initial, _ = build_trainer(load_recipe("tokenizer_stage1_tiny", stage1_overrides(workspace, "unused")))
    initial_weights = initial.model.seed_tokenizer.state_dict()
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(value, trained[f"seed_tokenizer.{key}"], rtol=0, atol=0)
        if key.startswith("vision_model."):
            torch.testing.assert_close(value, initial_weights[key], rtol=0, atol=0)
    changed = [
        key
        for key in exported.state_dict()
        if key.startswith("qformer.") and not torch.equal(exported.state_dict()[key], initial_weights[key])
    ]
    assert changed, "stage 1 must train the Q-Former"
    assert (export_dir / "preprocessor_config.json").exists()


def test_stage1_continues_from_a_tokenizer_and_trains_the_vision_tower_when_asked(workspace, stage1_run):
    overrides = stage1_overrides(workspace, "stage1_unfrozen") + ["model.config=null"]
    overrides += [f"model.tokenizer={stage1_run[1]}", "model.settings.freeze_vision_model=false"]
    overrides += ["training.max_steps=1", "training.save_strategy=no"]
    start = SeedTokenizerModel.from_pretrained(stage1_run[1]).state_dict()
    trainer, _ = build_trainer(load_recipe("tokenizer_stage1_tiny", overrides))
    model = trainer.model
    for key, value in start.items():  # the tokenizer's weights, the text side fresh
        torch.testing.assert_close(model.seed_tokenizer.state_dict()[key], value, rtol=0, atol=0)
    assert all(p.requires_grad for p in model.seed_tokenizer.vision_model.parameters())
    assert not any(p.requires_grad for p in model.seed_tokenizer.codebook.parameters())
    trainer.train()
    after = model.seed_tokenizer.state_dict()
    assert not torch.equal(
        after["vision_model.embeddings.patch_embedding.weight"],
        start["vision_model.embeddings.patch_embedding.weight"],
    )
    torch.testing.assert_close(after["codebook.weight"], start["codebook.weight"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- stage 2
def stage2_overrides(workspace: Path, output: str, data: str = "eight") -> list[str]:
    return [f"data.source={workspace / data}", f"training.output_dir={workspace / output}"]


def test_stage2_from_the_stage1_export_trains_only_the_decoder_side(workspace, stage1_run):
    overrides = stage2_overrides(workspace, "stage2") + [
        "model.config=null",
        f"model.tokenizer={stage1_run[1]}",
    ]
    overrides += [f"export_dir={workspace / 'stage2_export'}"]
    assert (
        cli(["train-tokenizer", "--recipe", "tokenizer_stage2_tiny", *[f"--set={o}" for o in overrides]]) == 0
    )
    logs = logged(workspace / "stage2")
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    for entry in logs:
        assert {
            "vq_loss",
            "codebook_loss",
            "commitment_loss",
            "reconstruction_loss",
            "generation_loss",
            "codebook_perplexity",
            "dead_codes",
        } <= entry.keys()
    assert logs[-1]["reconstruction_loss"] < logs[0]["reconstruction_loss"]
    checkpoint = load_file(workspace / "stage2" / "checkpoint-8" / "model.safetensors")
    assert not any(key.startswith("teacher.") for key in checkpoint), "the teacher must not be saved"
    before = SeedTokenizerModel.from_pretrained(stage1_run[1]).state_dict()
    after = SeedTokenizerModel.from_pretrained(workspace / "stage2_export").state_dict()
    changed_parts = set()
    for key in before:
        if key.startswith(("vision_model.", "qformer.", "query_tokens")):
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
        elif not torch.equal(after[key], before[key]):
            changed_parts.add(key.split(".")[0])
    assert changed_parts == {
        "encode_task_layer",
        "codebook",
        "decode_task_layer",
        "reconstruction_blocks",
        "generation_blocks",
        "generation_head",
        "generation_projection",
    }


def test_stage2_codebook_restarts_redraw_the_unused_codes_from_the_batch(workspace):
    """`codebook_restart_every`: on a restart step every code the batch did not pick is re-drawn from the batch's
    code-space vectors, the picked ones stay; between restart steps the codebook is left alone."""
    recipe = load_recipe(
        "tokenizer_stage2_tiny",
        [*stage2_overrides(workspace, "unused"), "model.settings.codebook_restart_every=2"],
    )
    trainer, _ = build_trainer(recipe)
    model = trainer.model.train()
    batch = first_batch(trainer)
    codebook = model.seed_tokenizer.codebook.weight
    before = codebook.detach().clone()
    with torch.no_grad():
        codes_before, code_space = model.seed_tokenizer.quantize(
            model.seed_tokenizer.causal_embeddings(batch["pixel_values"])
        )
    torch.manual_seed(0)
    model(**batch)  # restart step 0
    used = torch.zeros(len(before), dtype=torch.bool)
    used[codes_before.flatten()] = True
    torch.testing.assert_close(codebook[used], before[used], rtol=0, atol=0)
    candidates = code_space.reshape(-1, code_space.shape[-1])
    redrawn = codebook[~used].detach()
    assert (~used).any()
    # each re-drawn code is one of the batch's code-space vectors
    assert torch.cdist(redrawn, candidates).min(dim=1).values.max() < 1e-4
    after_restart = codebook.detach().clone()
    model(**batch)  # step 1: counting only
    torch.testing.assert_close(codebook.detach(), after_restart, rtol=0, atol=0)
    assert int(model.restart_steps) == 2 and int(model.code_uses.sum()) == codes_before.numel()


def test_stage2_codebook_restarts_of_a_factorised_code_space_draw_from_each_codes_own_positions(workspace):
    """With `code_groups`, a re-drawn code is one of the batch's code-space vectors at a position of its group."""
    groups = [[20, 24], [12, 40]]
    recipe = load_recipe(
        "tokenizer_stage2_tiny",
        [
            *stage2_overrides(workspace, "grouped"),
            "model.settings.codebook_restart_every=2",
            f"model.config.code_groups={json.dumps(groups)}",
        ],
    )
    trainer, _ = build_trainer(recipe)
    model = trainer.model.train()
    batch = first_batch(trainer)
    with torch.no_grad():
        codes_before, code_space = model.seed_tokenizer.quantize(
            model.seed_tokenizer.causal_embeddings(batch["pixel_values"])
        )
    assert (codes_before[:, :20] < 24).all() and (codes_before[:, 20:] >= 24).all()
    torch.manual_seed(0)
    model(**batch)  # restart step 0
    used = torch.zeros(64, dtype=torch.bool)
    used[codes_before.flatten()] = True
    assert not used[:24].all() and not used[24:].all()
    codebook = model.seed_tokenizer.codebook.weight.detach()
    for code in (~used).nonzero().flatten().tolist():
        own_positions = slice(0, 20) if code < 24 else slice(20, 32)
        other_positions = slice(20, 32) if code < 24 else slice(0, 20)
        own = code_space[:, own_positions].reshape(-1, code_space.shape[-1])
        other = code_space[:, other_positions].reshape(-1, code_space.shape[-1])
        assert torch.cdist(codebook[code][None], own).min() < 1e-4
        assert torch.cdist(codebook[code][None], other).min() > 1e-4


def test_stage2_logged_terms_match_the_tokenizer_api(workspace):
    # precomputed teacher embeddings from a dataset column
    import datasets

    source = datasets.load_dataset("imagefolder", data_dir=str(workspace / "eight"), split="train")
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(len(source), 16, generator=generator)
    source = source.add_column("clip_embeds", teacher.tolist())
    source.save_to_disk(workspace / "with_teacher")
    overrides = [
        f"data.source={workspace / 'with_teacher'}",
        f"training.output_dir={workspace / 'stage2_column'}",
        "teacher.config=null",
        "teacher.embeds_column=clip_embeds",
        "training.max_steps=1",
        "training.learning_rate=0.0",
    ]
    trainer = train_tokenizer(load_recipe("tokenizer_stage2_tiny", overrides))
    first = trainer.state.log_history[0]

    tokenizer = trainer.model.export_tokenizer().eval()
    records = [trainer.train_dataset[index] for index in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(records)
    with torch.no_grad():
        causal = tokenizer.causal_embeddings(batch["pixel_values"])
        codes = tokenizer.encode(batch["pixel_values"])
        code_space = tokenizer.encode_task_layer(causal)
        distance = F.mse_loss(tokenizer.codebook(codes), code_space)
        reconstruction = (
            1 - F.cosine_similarity(tokenizer.reconstruct_causal_embeddings(codes), causal, dim=-1).mean()
        )
        generation = F.mse_loss(tokenizer.decode(codes), batch["teacher_image_embeds"])
    vq = distance + 0.25 * distance  # codebook and commitment terms have the same value
    assert first["vq_loss"] == pytest.approx(vq.item(), rel=1e-5)
    assert first["reconstruction_loss"] == pytest.approx(reconstruction.item(), rel=1e-5)
    assert first["generation_loss"] == pytest.approx(generation.item(), rel=1e-5)
    assert first["loss"] == pytest.approx((5 * vq + 2 * reconstruction + 0.5 * generation).item(), rel=1e-5)
    counts = torch.bincount(codes.flatten(), minlength=64).double()
    probabilities = counts[counts > 0] / counts.sum()
    assert first["codebook_perplexity"] == pytest.approx(
        torch.exp(-(probabilities * probabilities.log()).sum()).item()
    )
    assert first["dead_codes"] == int((counts == 0).sum())


# ---------------------------------------------------------------------------------------------- resume
class StopAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("recipe", ["tokenizer_stage1_tiny", "tokenizer_stage2_tiny"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(workspace, recipe):
    make = stage1_overrides if recipe.endswith("1_tiny") else stage2_overrides
    common = ["training.max_steps=6", "training.save_steps=2", "training.per_device_train_batch_size=4"]
    straight = load_recipe(recipe, make(workspace, f"{recipe}-straight", "sixteen") + common)
    train_tokenizer(straight)
    resumed = load_recipe(recipe, make(workspace, f"{recipe}-resumed", "sixteen") + common)
    train_tokenizer(resumed, callbacks=[StopAfter(3)])  # stopped after step 3: checkpoint-2 is the last one
    assert sorted(path.name for path in (workspace / f"{recipe}-resumed").glob("checkpoint-*")) == [
        "checkpoint-2"
    ]
    train_tokenizer(resumed, resume_from_checkpoint=True)
    expected = load_file(workspace / f"{recipe}-straight" / "checkpoint-6" / "model.safetensors")
    actual = load_file(workspace / f"{recipe}-resumed" / "checkpoint-6" / "model.safetensors")
    halfway = load_file(workspace / f"{recipe}-straight" / "checkpoint-2" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert any(not torch.equal(expected[key], halfway[key]) for key in expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- processes
def run_cli(arguments: list[str], launcher: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*launcher, "-m", "seed_hf.cli", *arguments], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("recipe", ["tokenizer_stage1_tiny", "tokenizer_stage2_tiny"])
def test_two_processes_give_the_losses_of_one_process_with_the_same_global_batch(workspace, recipe):
    make = stage1_overrides if recipe.endswith("1_tiny") else stage2_overrides
    common = ["training.max_steps=3", "training.save_steps=3"]

    def arguments(output: str, per_device_batch: int) -> list[str]:
        overrides = make(workspace, output, "sixteen") + common
        overrides.append(f"training.per_device_train_batch_size={per_device_batch}")
        return ["train-tokenizer", "--recipe", recipe, *[f"--set={o}" for o in overrides]]

    # `accelerate launch --cpu` starts one process (several need MPI); `--multi_gpu` starts real processes
    # through torchrun, which join a gloo group on CPU (the recipe sets use_cpu)
    accelerate = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        "0",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    run_cli(arguments(f"{recipe}-two", 4), accelerate, workspace)
    assert cli(arguments(f"{recipe}-one", 8)) == 0  # the same entry point, in this process
    two, one = logged(workspace / f"{recipe}-two"), logged(workspace / f"{recipe}-one")
    assert [entry["step"] for entry in two] == [entry["step"] for entry in one] == [1, 2, 3]
    for entry_two, entry_one in zip(two, one, strict=True):
        for name in entry_one:
            if name.endswith("loss"):
                assert abs(entry_two[name] - entry_one[name]) < 1e-4, (name, entry_two["step"])
    if recipe.endswith("2_tiny"):  # code usage is counted over both processes
        assert [entry["dead_codes"] for entry in two] == [entry["dead_codes"] for entry in one]


# ---------------------------------------------------------------------------------------------- recipes
def test_full_size_recipes_describe_the_papers_runs():
    stage1 = load_recipe("tokenizer_stage1", ["data.source=/data/cc3m"])
    stage2 = load_recipe("tokenizer_stage2", ["data.source=/data/cc3m"])
    assert stage1.training["learning_rate"] == 3e-5 and stage1.model.settings["freeze_vision_model"]
    assert stage2.training["learning_rate"] == 1e-4 and stage2.training["weight_decay"] == 0.05
    assert stage2.model.tokenizer == stage1.export_dir
    assert {path.stem for path in RECIPES_DIR.glob("tokenizer_*.yaml")} == {
        "tokenizer_stage1",
        "tokenizer_stage2",
        "tokenizer_stage1_tiny",
        "tokenizer_stage2_tiny",
    }


def test_recipe_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="recipe needs 'data.source'"):
        load_recipe("tokenizer_stage1")
    with pytest.raises(
        ValueError, match=r"unknown key 'optimiser' at the top level; the valid keys there are"
    ):
        load_recipe("tokenizer_stage2", ["data.source=x", "optimiser.lr=1"])
    with pytest.raises(
        ValueError, match="must have exactly one of config, tokenizer, blip2; got \\['config', 'tokenizer'\\]"
    ):
        load_recipe("tokenizer_stage2_tiny", ["data.source=x", "model.tokenizer=y"])
    with pytest.raises(ValueError, match="override 'training.max_steps' must look like dotted.key=value"):
        load_recipe("tokenizer_stage2_tiny", ["training.max_steps"])
    with pytest.raises(ValueError, match="is neither a file nor a shipped recipe"):
        load_recipe(tmp_path / "missing.yaml")
    recipe = load_recipe("tokenizer_stage2_tiny", ["data.source=x", "training.save_strategy=no"])
    assert recipe.training["save_strategy"] == "no"  # YAML 1.2 booleans: "no" stays a string
    with pytest.raises(ValueError, match="'teacher' needs exactly one of pretrained, config, embeds_column"):
        dataclasses.replace(recipe, teacher=TeacherArguments()).validate()


# ---------------------------------------------------------------------------------------------- attribute term
def pairwise_separation(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the `[B, P, D]` vectors' positions and over pairs of values of within / (within + distance**2):
    the spread of a position's vector within a value against the squared distance of two values' means."""
    values = sorted(set(labels.tolist()))
    ratios = []
    for position in range(vectors.shape[1]):
        column = vectors[:, position]
        means = {value: column[labels == value].mean(0) for value in values}
        within = np.mean(
            [((row - means[value]) ** 2).sum() for row, value in zip(column, labels, strict=True)]
        )
        for first, second in itertools.combinations(values, 2):
            ratios.append(within / (within + ((means[first] - means[second]) ** 2).sum()))
    return float(np.mean(ratios))


def test_attribute_group_loss_sets_each_positions_spread_within_a_value_against_every_two_values_distance():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(10, 8, 3, generator=generator)
    labels = torch.tensor([[0, 5], [1, 5], [0, 7], [2, 7], [1, 5], [0, 9], [2, 9], [1, 7], [0, 5], [2, 9]])
    # two attributes over 8 positions: queries 0-3 and 4-7
    expected = [
        pairwise_separation(vectors[:, :4].numpy(), labels[:, 0].numpy()),
        pairwise_separation(vectors[:, 4:].numpy(), labels[:, 1].numpy()),
    ]
    torch.testing.assert_close(attribute_group_loss(vectors, labels).item(), float(np.mean(expected)))
    # without the last query (stage 1): queries 4-6 for the second attribute; the last one no longer counts
    expected[1] = pairwise_separation(vectors[:, 4:7].numpy(), labels[:, 1].numpy())
    torch.testing.assert_close(
        attribute_group_loss(vectors, labels, include_last=False).item(), float(np.mean(expected))
    )
    # groups that depend on their attribute alone give 0
    table = torch.randn(2, 10, 4, 3, generator=generator)
    grouped = torch.cat([table[0, labels[:, 0]], table[1, labels[:, 1]]], dim=1)
    assert attribute_group_loss(grouped, labels).item() < 1e-6
    # one value far from the other two, which share one mean: a tiny share of the total scatter, but one pair of
    # values out of three is not told apart
    far_value = 0.1 * vectors[:, :4].clone()
    for value in range(3):
        far_value[labels[:, 0] == value] -= far_value[labels[:, 0] == value].mean(0)
    far_value[labels[:, 0] == 0] += 100.0
    share_of_total = ((far_value - far_value.mean(0)) ** 2).sum()
    within = sum(
        ((far_value[labels[:, 0] == v] - far_value[labels[:, 0] == v].mean(0)) ** 2).sum() for v in range(3)
    )
    assert within / share_of_total < 1e-4
    far_value_term = attribute_group_loss(far_value, labels[:, :1]).item()
    assert far_value_term == pytest.approx(1 / 3, abs=1e-3)
    torch.testing.assert_close(far_value_term, pairwise_separation(far_value.numpy(), labels[:, 0].numpy()))
    # a batch holding one value of an attribute has no pair to separate and adds nothing
    one_value = labels.clone()
    one_value[:, 1] = 5
    torch.testing.assert_close(
        attribute_group_loss(vectors, one_value).item(),
        pairwise_separation(vectors[:, :4].numpy(), labels[:, 0].numpy()),
    )
    with pytest.raises(
        ValueError, match=r"attribute_labels must have shape \(batch_size=10, num_attributes\)"
    ):
        attribute_group_loss(vectors, labels[:4])


def test_both_stages_add_the_weighted_attribute_term_from_the_datas_attribute_columns(workspace, stage1_run):
    columns = ["data.attribute_columns=[colour, shape]"]
    stage1 = load_recipe(
        "tokenizer_stage1_tiny",
        [*stage1_overrides(workspace, "unused"), "model.settings.attribute_loss_weight=3.0", *columns],
    )
    trainer, _ = build_trainer(stage1)
    batch = first_batch(trainer)
    records = [trainer.train_dataset[index] for index in range(len(trainer.train_dataset))]
    # labels: per column, equal values get equal labels
    for column, name in enumerate(("colour", "shape")):
        values = [record[name] for record in records]
        same = [[a == b for b in values] for a in values]
        assert (
            batch["attribute_labels"][:, column, None] == batch["attribute_labels"][None, :, column]
        ).tolist() == same
    model = trainer.model.eval()
    with torch.no_grad():
        output = model(**batch)
        causal = model.seed_tokenizer.causal_embeddings(batch["pixel_values"])
        expected = attribute_group_loss(causal, batch["attribute_labels"], include_last=False)
    torch.testing.assert_close(output.attribute_loss, expected)
    torch.testing.assert_close(output.loss, output.contrastive_loss + 3.0 * expected)
    with pytest.raises(ValueError, match="attribute_labels are required when config.attribute_loss_weight"):
        model(**{key: value for key, value in batch.items() if key != "attribute_labels"})

    stage2 = load_recipe(
        "tokenizer_stage2_tiny",
        [
            *stage2_overrides(workspace, "unused"),
            "model.config=null",
            f"model.tokenizer={stage1_run[1]}",
            "model.settings.attribute_loss_weight=0.5",
            *columns,
        ],
    )
    trainer, _ = build_trainer(stage2)
    model, batch = trainer.model.eval(), first_batch(trainer)
    with torch.no_grad():
        output = model(**batch)
        code_space = model.seed_tokenizer.quantize(
            model.seed_tokenizer.causal_embeddings(batch["pixel_values"])
        )[1]
        expected = attribute_group_loss(code_space, batch["attribute_labels"])
    torch.testing.assert_close(output.attribute_loss, expected)
    terms = 5.0 * output.vq_loss + 2.0 * output.reconstruction_loss + 0.5 * output.generation_loss
    torch.testing.assert_close(output.loss, terms + 0.5 * expected)
    # the weight and the columns go together
    with pytest.raises(
        ValueError, match="'model.settings.attribute_loss_weight' and 'data.attribute_columns' go"
    ):
        load_recipe("tokenizer_stage2_tiny", [*stage2_overrides(workspace, "unused"), *columns])


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_a_tower_of_a_full_clip_loads_without_unexpected_weights(tmp_path, caplog, tower):
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel, CLIPVisionModelWithProjection

    from seed_hf.training.tokenizer_stages import load_clip_tower

    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**sizes, "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={**sizes, "image_size": 28, "patch_size": 14},
    )
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    tower_class = {"vision": CLIPVisionModelWithProjection, "text": CLIPTextModel}[tower]
    reference = tower_class.from_pretrained(tmp_path / "clip").eval()
    caplog.clear()
    loaded = load_clip_tower(str(tmp_path / "clip"), tower).eval()
    assert "UNEXPECTED" not in caplog.text
    inputs = (
        {"pixel_values": torch.randn(2, 3, 28, 28)}
        if tower == "vision"
        else {"input_ids": torch.randint(2, 100, (2, 7))}
    )
    with torch.no_grad():
        expected, actual = reference(**inputs), loaded(**inputs)
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=0, rtol=0)
