"""Training survives interruptions and bad input: resumption skips checkpoints whose save was cut short, SIGTERM
ends `train-shapes --jobs 2` with its stage processes and staging folders gone, tokenization refuses to mix the
codes of two tokenizers and misspelt `--set` keys are refused. (Two smoke runs giving the same weights, one of them
interrupted and resumed: `test_shapes_training.py`.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from seed_hf.training.checkpoints import is_complete_checkpoint, last_complete_checkpoint
from seed_hf.training.llm_training import load_recipe as load_llm_recipe
from seed_hf.training.shapes.recipe import load_shapes_recipe
from seed_hf.training.shapes.run import CHECKPOINTS_FOLDER, STAGE_TIMES_FILE
from seed_hf.training.shapes.text_stages import train_clip_tokenizer
from seed_hf.training.shapes.train import train_shapes
from seed_hf.training.tokenize_images import tokenize_images
from seed_hf.training.tokenizer_stages import load_recipe as load_tokenizer_recipe
from tests.run_outputs import assert_same_weights
from tests.seed_llama_fixtures import build_tiny_visual_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))


# ------------------------------------------------------------------------------------------- 1. checkpoints
def test_resumption_skips_and_removes_a_checkpoint_whose_save_was_cut_short(tmp_path, datasets_cache):
    output_dir = tmp_path / "run"
    train_shapes(output_dir, "smoke", stages=["data", "teacher"])
    checkpoints = output_dir / CHECKPOINTS_FOLDER / "teacher"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    # a save interrupted after the config (`save_pretrained` writes it first) ...
    (checkpoints / "checkpoint-3").mkdir()
    shutil.copy(checkpoints / "checkpoint-2" / "config.json", checkpoints / "checkpoint-3")
    # ... and one cut short while writing the weights
    truncated = checkpoints / "checkpoint-4"
    shutil.copytree(checkpoints / "checkpoint-2", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert not is_complete_checkpoint(truncated)
    assert is_complete_checkpoint(checkpoints / "checkpoint-2")

    shutil.rmtree(output_dir / "teacher")
    outcome = train_shapes(
        output_dir, "smoke", stages=["teacher"], overrides=["teacher.training.max_steps=5"]
    )
    assert outcome == {"teacher": "done"}
    states = {
        path.name: json.loads((path / "trainer_state.json").read_text())["global_step"]
        for path in checkpoints.iterdir()
    }
    # resumed from step 2: steps 3 and 4 were saved again, completely
    assert states == {f"checkpoint-{step}": step for step in range(1, 6)}
    assert last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-5")


def test_a_disk_full_during_a_checkpoint_save_is_resumed_from_the_last_complete_one(tmp_path, datasets_cache):
    # a real failed write: under `ulimit -f` the weights of checkpoint-2 hit the file-size limit (EFBIG, as a full
    # disk gives ENOSPC) while the run resumes from checkpoint-1
    output_dir = tmp_path / "run"
    train_shapes(output_dir, "smoke", stages=["data", "teacher"])
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(output_dir / "teacher", uninterrupted / "teacher")
    checkpoints = output_dir / CHECKPOINTS_FOLDER / "teacher"
    assert (checkpoints / "checkpoint-2" / "model.safetensors").stat().st_size > 64 * 1024
    shutil.rmtree(output_dir / "teacher")
    shutil.rmtree(checkpoints / "checkpoint-2")
    command = [sys.executable, "-m", "seed_hf.training.shapes.train", "--schedule", "smoke"]
    command += ["--output-dir", str(output_dir), "--stages", "teacher"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    limited = subprocess.run(
        ["bash", "-c", 'ulimit -f 64 && exec "$@"', "bash", *command],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert limited.returncode != 0 and "File too large" in limited.stderr, limited.stderr[-2000:]
    # the save was cut short: checkpoint-2 was begun, not finished
    assert (checkpoints / "checkpoint-2").is_dir() and not is_complete_checkpoint(
        checkpoints / "checkpoint-2"
    )
    assert not (output_dir / "teacher").exists() and _staging_folders(output_dir) == []
    subprocess.run(command, env=environment, check=True)
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert is_complete_checkpoint(checkpoints / "checkpoint-2")
    assert assert_same_weights(uninterrupted, output_dir) == 1  # the teacher, as if never interrupted


def test_the_newest_complete_checkpoint_is_found_and_incomplete_ones_removed(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoint-7").mkdir()
    (tmp_path / "checkpoint-7" / "config.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) is None
    assert not (tmp_path / "checkpoint-7").exists()


# --------------------------------------------------------------------------------------------- 2. SIGTERM
def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def _staging_folders(output_dir: Path) -> list[str]:
    return sorted(path.name for path in output_dir.iterdir() if path.is_dir() and path.name.startswith("."))


def test_sigterm_ends_parallel_stages_without_orphans_or_staging_folders(tmp_path):
    output_dir = tmp_path / "run"
    command = [sys.executable, "-m", "seed_hf.training.shapes.train", "--output-dir", str(output_dir)]
    command += ["--schedule", "smoke", "--jobs", "2", "--stages", "data", "teacher", "vae"]
    environment = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets_cache"), "HF_HUB_OFFLINE": "1"}
    parent = subprocess.Popen(command, env=environment, cwd=tmp_path)
    try:
        # wait until a stage process is writing its staging folder
        while not (output_dir.is_dir() and _staging_folders(output_dir)):
            assert parent.poll() is None, "train-shapes ended before any stage started"
            time.sleep(0.05)
        children = _children(parent.pid)
        assert children
        os.kill(parent.pid, signal.SIGTERM)
        assert parent.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if parent.poll() is None:
            parent.kill()
    assert [pid for pid in children if _alive(pid)] == []
    assert _staging_folders(output_dir) == []
    times = json.loads((output_dir / STAGE_TIMES_FILE).read_text())
    assert "data" in times
    rerun = subprocess.run(command, env=environment, cwd=tmp_path, check=False)
    assert rerun.returncode == 0
    assert all((output_dir / stage).is_dir() for stage in ("data", "teacher", "vae"))
    assert _staging_folders(output_dir) == []
    # the interrupted-then-resumed run ends where an uninterrupted one does, bit for bit
    uninterrupted = tmp_path / "uninterrupted"
    command[command.index(str(output_dir))] = str(uninterrupted)
    subprocess.run(command, env=environment, cwd=tmp_path, check=True)
    assert assert_same_weights(uninterrupted, output_dir) >= 2  # teacher and VAE


# -------------------------------------------------------------------------------------- 3. tokenize-images
def test_tokenization_refuses_to_resume_with_another_tokenizer(tmp_path):
    from seed_hf.training.tokenize_images import image_processor_for

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    source = datasets.Dataset.from_dict({"image": images, "text": list("abcd")}, features=features)
    first, second = build_tiny_visual_tokenizer(seed=0), build_tiny_visual_tokenizer(seed=1)
    processor = image_processor_for("", first.config)
    output_dir = tmp_path / "codes"
    tokenize_images(source, first, processor, output_dir, rows_per_file=2, show_progress=False)
    # the same tokenizer resumes; another one (same config, other weights) is refused
    tokenize_images(source, first, processor, output_dir, rows_per_file=2, show_progress=False)
    with pytest.raises(ValueError, match=r"codes.*model_fingerprint"):
        tokenize_images(source, second, processor, output_dir, rows_per_file=2, show_progress=False)
    other_processor = image_processor_for("", first.config)
    other_processor.image_mean = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"image_processor"):
        tokenize_images(source, first, other_processor, output_dir, rows_per_file=2, show_progress=False)


# ------------------------------------------------------------------------------------------- 4. overrides
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.caption_sampels=8", r"unknown key 'caption_sampels' under 'data'.*'caption_samples'"),
        ("teacher.training=5", r"'teacher.training' must be a mapping, got 5"),
        ("teacher.training.max_stpes=3", r"unknown key 'max_stpes' under 'teacher.training'.*'max_steps'"),
        ("sead=1", r"unknown key 'sead' at the top level.*'seed'"),
    ],
)
def test_misspelt_or_mistyped_shapes_overrides_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_shapes_recipe("smoke", [override])


def test_overrides_may_still_set_keys_a_recipe_leaves_out():
    recipe = load_shapes_recipe("smoke", ["teacher.training.save_total_limit=2", "num_threads=1"])
    assert recipe.teacher.training["save_total_limit"] == 2
    tokenizer = load_tokenizer_recipe(
        "tokenizer_stage1_tiny",
        [
            "data.source=x",
            "text_tokenizer=t",
            "model.settings.label_smoothing=0.1",
            "teacher.config.hidden_size=8",
        ],
    )
    assert tokenizer.model.settings["label_smoothing"] == 0.1
    with pytest.raises(ValueError, match=r"unknown key 'sourse' under 'data'"):
        load_tokenizer_recipe("tokenizer_stage1_tiny", ["data.sourse=x"])


def test_train_llm_refuses_unknown_or_mistyped_sections():
    with pytest.raises(ValueError, match=r"'training' must be a mapping, got 5"):
        load_llm_recipe("llm_pretrain_lora_tiny", training=5)
    with pytest.raises(ValueError, match=r"unknown key 'rr' under 'lora'"):
        load_llm_recipe("llm_pretrain_lora_tiny", lora={"rr": 2})


# ----------------------------------------------------------------------------------------- 5. determinism
def test_the_clip_tokenizer_gives_the_same_ids_every_time():
    texts = ["a red square (left), a blue circle: top.", "the green triangle, below; big."] * 20
    vocabularies = [train_clip_tokenizer(texts, 300, 32).get_vocab() for _ in range(4)]
    assert all(vocabulary == vocabularies[0] for vocabulary in vocabularies)
