"""`seed-hf train-shapes` on the smoke schedule: every stage runs through the project's training code and loads with
`from_pretrained`, the assembled checkpoint runs in the text-to-image pipeline in a fresh process, finished stages
are skipped, an interrupted stage resumes from its last `Trainer` checkpoint, and the decoder is trained on the
conditioning the pipeline feeds it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from seed_hf.cli import main as cli
from seed_hf.training.recipes import read_recipe_values
from seed_hf.training.shapes.image_stages import UnCLIPDecoderForTraining
from seed_hf.training.shapes.recipe import load_shapes_recipe, shapes_recipe_file
from seed_hf.training.shapes.run import (
    CHECKPOINTS_FOLDER,
    SHAPES_DECODER_DEFAULTS,
    SHAPES_DECODER_SCHEDULER,
    STAGES,
    ShapesRun,
)
from seed_hf.training.shapes.text_stages import run_data
from seed_hf.training.shapes.token_stages import run_llm_sequences, run_tokenized
from seed_hf.training.shapes.train import longest_stage_chain, train_shapes, train_shapes_in_parallel
from tests.run_outputs import assert_same_weights

TRAINER_STAGES = (
    "teacher",
    "vae",
    "decoder",
    "tokenizer_stage1",
    "tokenizer_stage2",
    "llm_lora",
    "llm_full",
    "llm_sft",
    "llm_sequences",
)


class Interrupted(Exception):
    pass


class InterruptOnce(TrainerCallback):
    """Stops the first `Trainer` it sees at the end of step 2, once checkpoint-1 is on disk and checkpoint-2 is not."""

    def __init__(self):
        self.fired = False

    def on_step_end(self, args, state, control, **kwargs):
        if not self.fired and state.global_step == 2:
            self.fired = True
            raise Interrupted(args.output_dir)


class FirstStep(TrainerCallback):
    """Records, per `Trainer` output folder, the global step its first training step starts from."""

    def __init__(self):
        self.first_step = {}

    def on_step_begin(self, args, state, control, **kwargs):
        self.first_step.setdefault(Path(args.output_dir).name, state.global_step)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes_run")
    output_dir = folder / "run"
    with pytest.MonkeyPatch.context() as patch:  # keep the datasets cache of the run out of the user's
        patch.setenv("HF_DATASETS_CACHE", str(folder / "datasets_cache"))
        with pytest.raises(Interrupted):
            train_shapes(output_dir, "smoke", callbacks=[InterruptOnce()])
        after_interruption = sorted(path.name for path in output_dir.iterdir())
        times_after_interruption = json.loads((output_dir / "stage_times.json").read_text())
        teacher_checkpoints = sorted(
            path.name for path in (output_dir / CHECKPOINTS_FOLDER / "teacher").iterdir()
        )
        recorder = FirstStep()
        outcome = train_shapes(output_dir, "smoke", callbacks=[recorder])
        yield {
            "output_dir": output_dir,
            "after_interruption": after_interruption,
            "times_after_interruption": times_after_interruption,
            "teacher_checkpoints": teacher_checkpoints,
            "outcome": outcome,
            "first_step": recorder.first_step,
        }


def test_an_interrupted_stage_leaves_no_output_and_resumes_from_its_last_checkpoint(smoke_run):
    # the data stage had finished; the teacher stage stopped after writing checkpoint-1, leaving no half folder
    assert smoke_run["after_interruption"] == [CHECKPOINTS_FOLDER, "data", "stage_times.json"]
    assert smoke_run["teacher_checkpoints"] == ["checkpoint-1"]
    # the interrupted teacher's time is kept: its resumed run adds to it
    assert set(smoke_run["times_after_interruption"]) == {"data", "teacher"}
    assert smoke_run["outcome"] == {stage: "skipped" if stage == "data" else "done" for stage in STAGES}
    # the resumed teacher starts at step 1; every other Trainer starts fresh
    assert smoke_run["first_step"] == {stage: 1 if stage == "teacher" else 0 for stage in TRAINER_STAGES}
    output_dir = smoke_run["output_dir"]
    assert sorted(path.name for path in output_dir.iterdir() if path.name.startswith(".")) == []
    assert set(json.loads((output_dir / "stage_times.json").read_text())) == set(STAGES)


def test_the_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(smoke_run, tmp_path, monkeypatch):
    # two smoke runs with the same seed, one interrupted in the teacher stage and resumed: every stage's weights
    # are identical (the stages are deterministic, and resumption continues exactly where the run stopped)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    train_shapes(tmp_path / "run", "smoke")
    assert assert_same_weights(tmp_path / "run", smoke_run["output_dir"]) >= len(TRAINER_STAGES)


def test_a_second_invocation_skips_every_finished_stage(smoke_run, capsys):
    output_dir = smoke_run["output_dir"]
    before = {stage: (output_dir / stage).stat().st_mtime_ns for stage in STAGES}
    assert cli(["train-shapes", "--schedule", "smoke", "--output-dir", str(output_dir)]) == 0
    printed = capsys.readouterr().out
    for stage in STAGES:
        assert f"{stage:18s} skipped" in printed
    assert {stage: (output_dir / stage).stat().st_mtime_ns for stage in STAGES} == before


def test_every_stage_output_loads_with_from_pretrained(smoke_run):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer, CLIPModel

    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline
    from seed_hf.training.shapes import render
    from seed_hf.training.shapes.image_stages import images_to_pixels
    from seed_hf.training.tokenize_images import load_tokenized_images

    output_dir = smoke_run["output_dir"]
    recipe = load_shapes_recipe("smoke")
    image = render(0)

    clip_tokenizer = AutoTokenizer.from_pretrained(output_dir / "teacher")
    teacher = CLIPModel.from_pretrained(output_dir / "teacher")
    assert teacher.config.projection_dim == recipe.teacher.projection_dim
    assert len(clip_tokenizer) == teacher.config.text_config.vocab_size

    vae = AutoencoderKL.from_pretrained(output_dir / "vae")
    with torch.no_grad():
        latents = vae.encode(images_to_pixels([image])).latent_dist.mean
    assert latents.shape == (1, 4, 16, 16)

    decoder = SeedUnCLIPPipeline.from_pretrained(output_dir / "decoder")
    assert decoder.seed_tokenizer is None
    assert isinstance(decoder.scheduler, DPMSolverMultistepScheduler)
    assert decoder.scheduler.config.algorithm_type == "dpmsolver++"
    assert decoder.embedding_dim == recipe.teacher.projection_dim

    for stage in ("tokenizer_stage1", "tokenizer_stage2"):
        tokenizer = SeedTokenizerModel.from_pretrained(output_dir / stage)
        codes = tokenizer.encode(torch.randn(2, 3, 64, 64))
        assert codes.shape == (2, 32)
        assert 0 <= int(codes.min()) and int(codes.max()) < recipe.tokenizer_stage1.config["num_codes"]

    captions = load_tokenized_images(output_dir / "tokenized" / "captions")
    assert len(captions) == recipe.data.caption_samples
    assert {len(codes) for codes in captions["image_codes"]} == {32}
    chat, sequence_chat = (
        load_tokenized_images(output_dir / "tokenized" / name) for name in ("chat", "sequence_chat")
    )
    for records in (chat, sequence_chat):
        image_parts = [
            sum(part["type"] == "image" for turn in messages for part in turn["content"])
            for messages in records["messages"]
        ]
        assert [len(codes) for codes in records["image_codes"]] == image_parts
    # several-image records (each with 2 or more images in its first turn) only in the several-image stage's
    # set, followed by the replayed instruction records, which are records of `chat`
    several = recipe.data.clip_qa_samples + recipe.data.composition_samples + recipe.data.in_context_samples
    assert len(sequence_chat) == several + recipe.data.sequence_replay_samples
    first_turn_images = [
        sum(part["type"] == "image" for part in messages[0]["content"])
        for messages in sequence_chat["messages"]
    ]
    assert min(first_turn_images[:several]) >= 2
    assert all(
        sum(part["type"] == "image" for part in messages[0]["content"]) < 2 for messages in chat["messages"]
    )
    chat_records = [json.dumps(messages) for messages in chat["messages"]]
    assert all(json.dumps(messages) in chat_records for messages in sequence_chat["messages"][several:])

    for stage in ("llm_init", "llm_merged", "llm_full", "llm_sft", "llm_sequences"):
        model = AutoModelForCausalLM.from_pretrained(output_dir / stage)
        assert model.config.model_type == "seed_llama"
        AutoProcessor.from_pretrained(output_dir / stage)
    adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(output_dir / "llm_init"), output_dir / "llm_lora"
    )
    assert adapter.peft_config["default"].r == recipe.llm.lora.lora["r"]


def test_the_assembled_checkpoint_draws_and_reads_images_in_a_fresh_process(smoke_run):
    folder = smoke_run["output_dir"] / "seed_shapes"
    script = f"""
import json, seed_hf
from transformers import pipeline
from seed_hf.training.shapes import render
generator = pipeline("seed-text-to-image", model={str(folder)!r})
out = generator("a large red circle on a white background in the top left corner", seed=0, num_inference_steps=2)
image = out["images"][0]
reader = pipeline("seed-image-to-text", model={str(folder)!r})
answer = reader(render(0), seed=0, max_new_tokens=4)
print(json.dumps({{"mode": image.mode, "size": list(image.size), "answer": type(answer[0]["generated_text"]).__name__}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "mode": "RGB",
        "size": [64, 64],
        "answer": "str",
    }
    # the recommended decoder settings, as the shipped models/seed-shapes has them
    index = json.loads((folder / "detokenizer" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", SHAPES_DECODER_SCHEDULER]
    assert {key: index[key] for key in SHAPES_DECODER_DEFAULTS} == SHAPES_DECODER_DEFAULTS


def test_the_decoder_trains_on_the_class_vector_the_pipeline_builds(smoke_run):
    from diffusers import DDPMScheduler

    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    pipe = SeedUnCLIPPipeline.from_pretrained(smoke_run["output_dir"] / "decoder")
    dim = pipe.embedding_dim
    training = UnCLIPDecoderForTraining(
        pipe.unet, DDPMScheduler(prediction_type="v_prediction"), torch.zeros(1, 4, 16), torch.ones(dim)
    )
    embeds = torch.randn(3, dim)
    # independent reference: the sinusoidal embedding of level 0 is cos(0) = 1 then sin(0) = 0
    expected = torch.cat([embeds, torch.ones(3, dim // 2), torch.zeros(3, dim // 2)], dim=1)
    torch.testing.assert_close(training.class_labels(embeds), expected)
    # the pipeline's noise at level 0 is tiny: its class vector is the same up to that noise
    built = pipe.noise_image_embeddings(embeds, noise_level=0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        built, expected, atol=0.05 * float(pipe.image_normalizer.std.max()) + 1e-3, rtol=0
    )


def test_recipes_and_stage_selection_are_checked(tmp_path):
    with pytest.raises(
        ValueError, match=r"`schedule` must be one of \('smoke', 'full'\) or a recipe file, got 'tiny'"
    ):
        load_shapes_recipe("tiny")
    with pytest.raises(
        ValueError, match="override 'teacher.projection_dim.x=3': 'projection_dim' is not a mapping"
    ):
        load_shapes_recipe("smoke", ["teacher.projection_dim.x=3"])
    assert load_shapes_recipe("smoke", ["decoder.training.max_steps=7"]).decoder.training["max_steps"] == 7
    with pytest.raises(ValueError, match=r"unknown stages \['teachers'\]"):
        train_shapes(tmp_path, "smoke", stages=["teachers"])
    with pytest.raises(ValueError, match="jobs must be a positive integer, got 0"):
        train_shapes_in_parallel(tmp_path, "smoke", jobs=0)
    needs = r"stage 'decoder' needs the output of \['data', 'teacher', 'vae', 'tokenizer_stage2'\] first"
    with pytest.raises(ValueError, match=needs):
        train_shapes(tmp_path, "smoke", stages=["decoder"])


def test_parallel_stages_give_the_outputs_of_a_sequential_run(smoke_run, tmp_path, monkeypatch):
    """`--jobs 2`: the decoder runs beside the LLM chain, each stage in its own process, with the same results."""
    import shutil

    import pyarrow.parquet as pq
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    output_dir = tmp_path / "run"
    rerun = ("decoder", "tokenized", "llm_init")
    # the stage folders and the decoder's Trainer checkpoints (so that it trains from scratch); llm_lora too
    shutil.copytree(
        smoke_run["output_dir"],
        output_dir,
        ignore=lambda folder, names: [name for name in names if name in (*rerun, "llm_lora")],
    )
    needs = r"stage 'llm_lora' needs the output of \['llm_init', 'tokenized'\] first"
    with pytest.raises(ValueError, match=needs):
        train_shapes_in_parallel(
            output_dir, "smoke", stages=["decoder", "llm_lora"]
        )  # llm_init not asked for

    outcome = train_shapes_in_parallel(
        output_dir, "smoke", stages=("llm_init", "decoder", "tokenized"), jobs=2
    )
    assert outcome == {"decoder": "done", "tokenized": "done", "llm_init": "done"}
    assert sorted(path.name for path in (output_dir / "logs").iterdir()) == [
        f"{stage}.log" for stage in sorted(rerun)
    ]
    # the reference: the same stage run in this process, also with one thread (with more, the float sums of the
    # backward pass differ in the last bits, and Adam turns that into visibly different weights)
    sequential, parallel = tmp_path / "sequential", output_dir
    shutil.copytree(
        parallel, sequential, ignore=lambda folder, names: [n for n in names if n in ("decoder", "logs")]
    )
    threads = torch.get_num_threads()
    try:
        train_shapes(sequential, "smoke", stages=["decoder"], overrides=["num_threads=1"])
    finally:
        torch.set_num_threads(threads)
    weights_file = Path("decoder", "unet", "diffusion_pytorch_model.safetensors")
    parallel_weights = load_file(parallel / weights_file)
    for name, weights in load_file(sequential / weights_file).items():
        torch.testing.assert_close(parallel_weights[name], weights, atol=0, rtol=0, msg=name)
    assert UNet2DConditionModel.from_pretrained(parallel / "decoder" / "unet") is not None
    for split in ("captions", "chat"):  # inference: the same codes as the module's sequential run
        shards = [
            sorted((run / "tokenized" / split).glob("*.parquet"))
            for run in (parallel, smoke_run["output_dir"])
        ]
        assert [path.name for path in shards[0]] == [path.name for path in shards[1]]
        for parallel_shard, sequential_shard in zip(*shards, strict=True):
            assert pq.read_table(parallel_shard).equals(pq.read_table(sequential_shard))

    shutil.rmtree(output_dir / "decoder")
    with pytest.raises(RuntimeError, match=r"stages \['decoder'\] failed; see .*decoder\.log"):
        train_shapes_in_parallel(output_dir, "smoke", overrides=["decoder.unet.block_out_channels=oops"])
    assert not (output_dir / "decoder").exists()


def test_the_wall_time_of_parallel_stages_is_the_longest_chain():
    # the VAE (10 s) precedes the decoder (5 s); the teacher path to the decoder is shorter (3 + 5)
    chain, seconds = longest_stage_chain({"vae": 10.0, "teacher": 3.0, "decoder": 5.0})
    assert seconds == 15.0
    assert chain[-3:] == ["vae", "decoder", "seed_shapes"]
    chain, seconds = longest_stage_chain({"vae": 10.0, "teacher": 3.0, "decoder": 5.0, "llm_sft": 20.0})
    assert seconds == 23.0
    assert chain[:2] == ["data", "teacher"] and chain[-3:] == ["llm_sft", "llm_sequences", "seed_shapes"]


def test_the_smoke_schedule_has_every_section_of_the_full_schedule():
    # the files, not the dataclasses (which give every field a value): smoke sets what full sets
    smoke, full = (read_recipe_values(shapes_recipe_file(schedule)) for schedule in ("smoke", "full"))
    assert smoke.keys() == full.keys()
    for section, values in full.items():
        if isinstance(values, dict):
            assert smoke[section].keys() == values.keys(), section


def test_the_from_scratch_vits_start_with_position_embeddings_at_the_recipe_scale(smoke_run):
    """`vision_position_embedding_std` (1.0 in the recipes) re-draws the position embeddings of the teacher's and
    the tokenizer's ViTs; at the libraries' 0.02 / 1e-10 a small ViT barely reads where a shape is."""
    from transformers import CLIPVisionModelWithProjection

    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    output_dir = smoke_run["output_dir"]
    teacher = CLIPVisionModelWithProjection.from_pretrained(output_dir / "teacher")
    tokenizer = SeedTokenizerModel.from_pretrained(output_dir / "tokenizer_stage2")
    for weights in (
        teacher.vision_model.embeddings.position_embedding.weight,
        tokenizer.vision_model.embeddings.position_embedding,
    ):
        # two smoke steps leave the draw's scale in place
        assert 0.8 < float(weights.std()) < 1.2


def test_an_in_process_run_leaves_torch_threads_as_it_found_them(tmp_path):
    # a recipe's num_threads holds for the run only: later work in the process (other tests, a caller's own
    # models) keeps its thread count, or its float sums change
    before = torch.get_num_threads()
    train_shapes(tmp_path / "run", "smoke", stages=["data"], overrides=[f"num_threads={before + 1}"])
    assert torch.get_num_threads() == before


def test_the_several_image_stage_is_the_sft_model_when_the_recipe_draws_no_several_image_records(
    smoke_run, tmp_path
):
    recipe = load_shapes_recipe(
        "smoke",
        [
            "data.clip_qa_samples=0",
            "data.composition_samples=0",
            "data.in_context_samples=0",
            "data.sequence_replay_samples=0",
        ],
    )
    run = ShapesRun(tmp_path, recipe)
    # the data stage writes no several-image set, and tokenization does without
    run_data(run, run.stage_dir("data"))
    assert not (run.stage_dir("data") / "sequence_chat").exists()
    shutil.copytree(smoke_run["output_dir"] / "tokenizer_stage2", run.stage_dir("tokenizer_stage2"))
    run_tokenized(run, run.stage_dir("tokenized"))
    assert sorted(path.name for path in run.stage_dir("tokenized").iterdir()) == ["captions", "chat"]
    (run.stage_dir("llm_sft") / "sub").mkdir(parents=True)
    for name in ("model.safetensors", "sub/config.json"):
        (run.stage_dir("llm_sft") / name).write_text(name)
    run_llm_sequences(run, run.stage_dir("llm_sequences"))
    for name in ("model.safetensors", "sub/config.json"):
        copied, original = (run.stage_dir(stage) / name for stage in ("llm_sequences", "llm_sft"))
        assert copied.read_text() == name and copied.stat().st_ino == original.stat().st_ino  # hard links
    assert not run.checkpoint_dir("llm_sequences").exists()  # nothing trained
