"""SEED-Shapes: train the whole SEED stack on the synthetic shapes world, on a CPU, with the project's training code.

`seed-hf train-shapes --output-dir DIR [--schedule smoke|full] [--stages NAME ...] [--set KEY=VALUE ...]
[--num-threads N]` runs the stages below in order. Sizes and schedules come from a recipe
(`recipes/shapes_smoke.yaml`: a few steps per stage, for tests; `recipes/shapes_full.yaml`: the shipped default
model, with its measured step times); `--set teacher.training.max_steps=3` overrides one value, `--num-threads 1`
keeps torch to one thread (much faster when other processes share the cores), `--jobs 2` runs independent stages
side by side, each in a one-thread process (on 2 cores: the VAE beside the teacher and tokenizer, the decoder
beside the LLM stages).

=================  ======================================================================================
stage              what it trains or writes (every output is a folder `DIR/<stage>`)
=================  ======================================================================================
data               the training sets (`seed_hf.training.shapes`: captions, unique images, chat records for
                   SFT and for the several-image stage), a CLIP BPE tokenizer and a LLaMA-style byte-level BPE
                   tokenizer with the image tokens
teacher            a tiny transformers `CLIPModel`, image-text contrastive (`return_loss=True`), `Trainer`
vae                a tiny diffusers `AutoencoderKL` (64x64x3 -> 16x16x8 with three blocks), `Trainer`
tokenizer_stage1   SEED tokenizer stage 1 (causal Q-Former ITC), `seed_hf.training.tokenizer_stages`
tokenizer_stage2   SEED tokenizer stage 2 (codebook, heads; the generation head regresses the teacher)
decoder            the unCLIP UNet (diffusers `UNet2DConditionModel`, projection class embedding fed an
                   image embedding and its noise-level embedding, as in unCLIP), `Trainer`, on the embedding
                   it is fed at use: the SEED tokenizer's generation embedding decoded from the image's codes;
                   saved as a [`SeedUnCLIPPipeline`] without tokenizer, with a DPM-Solver++ scheduler
tokenized          the captions and chat records with their images as SEED codes (`tokenize_images`)
llm_init           a random SEED-LLaMA with the shapes tokenizer and the tokenizer's image processor
llm_lora           LLM pre-training with LoRA on caption pairs (`seed_hf.training.llm_training`)
llm_merged         the adapter merged into the weights
llm_full           full pre-training, input embeddings frozen
llm_sft            instruction tuning on chat records (VQA, captioning, generation, edits, dialogues);
                   a LoRA recipe is merged into the weights at the end
llm_sequences      instruction tuning on records of several images (clip questions, compositions, in-context
                   edits) and a replay of the SFT records, from the SFT model; a copy of it when the recipe
                   draws no several-image records
seed_shapes        the complete checkpoint (`save_seed_checkpoint`): LLM + processor, `visual_tokenizer/`,
                   `detokenizer/`; `pipeline("seed-text-to-image", model=DIR/seed_shapes)` loads it
=================  ======================================================================================

Every stage writes its folder atomically (a temporary sibling renamed into place) and is skipped when the folder
exists, so a run interrupted anywhere continues where it stopped: a training stage resumes from the newest
`Trainer` checkpoint in `DIR/checkpoints/<stage>/`, image tokenization from its last written shard. The wall
time of every stage is added to `DIR/stage_times.json`, an interrupted run's included (its resumption goes on from
where it stopped).

The unCLIP decoder's and VAE's training models (`AutoencoderKLForTraining`, `UnCLIPDecoderForTraining`) are
plain `nn.Module`s whose `forward` returns `{"loss": ...}`, so that they run on the `Trainer` (checkpoints,
resumption, bf16 autocast on CPU, `accelerate launch`) like every other stage.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from seed_hf.io_utils import staged_directory, write_text_atomically
from seed_hf.logging_utils import get_logger

from ..recipes import add_recipe_arguments
from .image_stages import run_decoder, run_teacher, run_vae
from .recipe import ShapesRecipe, load_shapes_recipe
from .run import CHECKPOINTS_FOLDER, STAGE_INPUTS, STAGE_TIMES_FILE, STAGES, ShapesRun, torch_threads
from .text_stages import run_data
from .token_stages import (
    run_llm_full,
    run_llm_init,
    run_llm_lora,
    run_llm_merged,
    run_llm_sequences,
    run_llm_sft,
    run_seed_shapes,
    run_tokenized,
    run_tokenizer_stage1,
    run_tokenizer_stage2,
)

logger = get_logger(__name__)


# stage -> (function, whether the function gets a staging folder (True) or the target, writing it atomically itself)
_STAGE_FUNCTIONS: dict[str, tuple[Callable[[ShapesRun, Path], None], bool]] = {
    "data": (run_data, True),
    "teacher": (run_teacher, True),
    "vae": (run_vae, True),
    "decoder": (run_decoder, True),
    "tokenizer_stage1": (run_tokenizer_stage1, True),
    "tokenizer_stage2": (run_tokenizer_stage2, True),
    "tokenized": (run_tokenized, False),
    "llm_init": (run_llm_init, True),
    "llm_lora": (run_llm_lora, True),
    "llm_merged": (run_llm_merged, False),
    "llm_full": (run_llm_full, True),
    "llm_sft": (run_llm_sft, False),
    "llm_sequences": (run_llm_sequences, False),
    "seed_shapes": (run_seed_shapes, True),
}


class RunInterrupted(KeyboardInterrupt):
    """Raised in `train-shapes` by SIGTERM or SIGINT, so that the run unwinds (cleans up) as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> None:
    raise RunInterrupted(signum)


@contextlib.contextmanager
def interrupted_by_signals():
    """SIGTERM and SIGINT raise `RunInterrupted` inside the block, so that a run unwinds as an exception would
    (staging folders removed, stage times recorded, stage processes of `--jobs` terminated); the caller's handlers
    come back after it."""
    handlers = {
        signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _record_time(output_dir: Path, stage: str, seconds: float) -> None:
    path = output_dir / STAGE_TIMES_FILE
    # processes running independent chains of one run share the file: read-modify-write under a lock
    lock_path = output_dir / CHECKPOINTS_FOLDER / f"{STAGE_TIMES_FILE}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(path.read_text()) if path.exists() else {}
        times[stage] = round(times.get(stage, 0.0) + seconds, 1)
        write_text_atomically(path, json.dumps(times, indent=2))


def _selected_stages(stages: Sequence[str] | None) -> tuple[str, ...]:
    selected = STAGES if stages is None else tuple(stages)
    if unknown := [stage for stage in selected if stage not in STAGES]:
        raise ValueError(f"unknown stages {unknown}; the stages are {list(STAGES)}")
    return selected


def _missing_inputs_error(stage: str, missing: list[str]) -> ValueError:
    return ValueError(f"stage {stage!r} needs the output of {missing} first (run those stages)")


def train_shapes(
    output_dir: str | os.PathLike,
    schedule: str | ShapesRecipe = "full",
    stages: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
) -> dict[str, str]:
    """
    Run the SEED-Shapes stages (see the module docstring) into `output_dir`.

    Args:
        output_dir: the run's folder; each stage writes `output_dir/<stage>`.
        schedule: `"smoke"`, `"full"`, a recipe path, or a [`ShapesRecipe`].
        stages: the stages to run (default: all), in the run's order whatever the order given; each needs the
            folders of its `STAGE_INPUTS`.
        overrides: `"dotted.key=value"` recipe overrides (ignored for a `ShapesRecipe`).
        callbacks: `TrainerCallback`s added to every `Trainer` of the run.

    Returns:
        `{stage: "skipped" | "done"}` for the stages asked for.
    """
    recipe = schedule if isinstance(schedule, ShapesRecipe) else load_shapes_recipe(schedule, overrides)
    selected = _selected_stages(stages)
    run = ShapesRun(Path(output_dir), recipe, tuple(callbacks))
    run.output_dir.mkdir(parents=True, exist_ok=True)
    # More OpenMP threads than free cores stall every parallel region: on the shared 2-core machine a UNet step took
    # 10 s with 2 threads and 0.75 s with 1.
    with torch_threads(recipe.num_threads):
        return {stage: _run_stage(run, stage) for stage in STAGES if stage in selected}


def _run_stage(run: ShapesRun, stage: str) -> str:
    """Run one stage of `run` unless its folder exists: `"skipped"` or `"done"`."""
    target = run.stage_dir(stage)
    if target.exists():
        return "skipped"
    missing = [before for before in STAGE_INPUTS[stage] if not run.stage_dir(before).exists()]
    if missing:
        raise _missing_inputs_error(stage, missing)
    function, staged = _STAGE_FUNCTIONS[stage]
    logger.info("train-shapes: stage %s", stage)
    start = time.perf_counter()
    try:
        if staged:
            with staged_directory(target) as staging:
                function(run, staging)
        else:
            function(run, target)
    finally:
        # an interrupted stage resumes from its checkpoints, so the time it spent counts towards the stage
        _record_time(run.output_dir, stage, time.perf_counter() - start)
    return "done"


def longest_stage_chain(stage_times: dict[str, float]) -> tuple[list[str], float]:
    """The chain of dependent stages (`STAGE_INPUTS`) with the largest summed time: the wall time of a run whose
    independent stages run side by side. `--jobs 2` comes within seconds of it: only the short `tokenized` and
    `llm_init` ever make a third independent stage. Stages without a time count as 0 s."""
    finish: dict[str, tuple[float, list[str]]] = {}
    for stage in STAGES:  # STAGES lists every stage after its inputs
        before = max((finish[name] for name in STAGE_INPUTS[stage]), default=(0.0, []))
        finish[stage] = (before[0] + stage_times.get(stage, 0.0), [*before[1], stage])
    seconds, chain = max(finish.values())
    return chain, seconds


def train_shapes_in_parallel(
    output_dir: str | os.PathLike,
    schedule: str = "full",
    stages: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    jobs: int = 2,
    num_threads: int = 1,
    poll_seconds: float = 1.0,
) -> dict[str, str]:
    """
    Run the stages as [`train_shapes`] does, but up to `jobs` at once: each stage in its own process with
    `num_threads` torch threads, as soon as the stages of its `STAGE_INPUTS` are done (on 2 cores: the VAE beside
    the teacher and tokenizer, then the decoder beside the LLM chain). A stage's output goes to
    `output_dir/logs/<stage>.log`.

    Returns:
        `{stage: "skipped" | "done"}` for the stages asked for. Raises `RuntimeError` naming the log of a stage
        that failed, after the stages still running have finished.
    """
    for name, value in (("jobs", jobs), ("num_threads", num_threads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    selected = _selected_stages(stages)
    output_dir = Path(output_dir)
    log_dir = output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcome = {stage: "skipped" for stage in STAGES if stage in selected and (output_dir / stage).exists()}
    waiting = [stage for stage in STAGES if stage in selected and stage not in outcome]
    for stage in waiting:
        missing = [
            before
            for before in STAGE_INPUTS[stage]
            if before not in waiting and not (output_dir / before).exists()
        ]
        if missing:
            raise _missing_inputs_error(stage, missing)
    command = [
        sys.executable,
        "-m",
        "seed_hf.training.shapes.train",
        "--output-dir",
        str(output_dir),
        "--schedule",
        str(schedule),
    ]
    command += [f"--set={override}" for override in overrides] + [
        "--num-threads",
        str(num_threads),
        "--stages",
    ]

    def start(stage: str) -> subprocess.Popen:
        with open(log_dir / f"{stage}.log", "a") as log:
            return subprocess.Popen(command + [stage], stdout=log, stderr=subprocess.STDOUT)

    done, failed = run_stage_processes(waiting, STAGE_INPUTS, start, jobs, poll_seconds)
    outcome.update(dict.fromkeys(done, "done"))
    if failed:
        logs = ", ".join(str(log_dir / f"{stage}.log") for stage in failed)
        raise RuntimeError(f"stages {failed} failed; see {logs}")
    return {stage: outcome[stage] for stage in STAGES if stage in outcome}


def run_stage_processes(
    waiting: Sequence[str],
    inputs: Mapping[str, Sequence[str]],
    start: Callable[[str], subprocess.Popen],
    jobs: int,
    poll_seconds: float = 1.0,
    description: str = "train-shapes stages",
) -> tuple[list[str], list[str]]:
    """
    Run tasks as processes, `jobs` at once: each task of `waiting` (in that order of preference) is started with
    `start(task)` once none of its `inputs` is waiting or running. After a failure no new task starts.

    Returns:
        `(done, failed)`: the tasks whose process exited with 0, and the others. On an exception (an interruption,
        `RunInterrupted`) the running processes are terminated and waited for before it propagates: no stage
        outlives the run; each one removes its staging folder and records its time on SIGTERM.
    """
    from tqdm.auto import tqdm

    waiting, running, done, failed = list(waiting), {}, [], []
    try:
        with tqdm(total=len(waiting), desc=description, unit="stage") as progress:
            while waiting or running:
                for task, process in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[task]
                    if process.returncode:
                        failed.append(task)
                    else:
                        done.append(task)
                        progress.update()
                if not failed:
                    for task in list(waiting):
                        if len(running) >= jobs:
                            break
                        if any(before in running or before in waiting for before in inputs[task]):
                            continue
                        waiting.remove(task)
                        running[task] = start(task)
                        progress.set_postfix_str(", ".join(running))
                elif not running:
                    break
                time.sleep(poll_seconds)
    except BaseException:
        for process in running.values():
            process.terminate()
        for process in running.values():
            process.wait()
        raise
    return done, failed


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf train-shapes`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf train-shapes", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", required=True, help="the run's folder (stages already in it are skipped)"
    )
    parser.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the recipe's num_threads, else torch's; 1 per process with --jobs); "
        "use 1 on a busy machine",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        default=None,
        choices=STAGES,
        metavar="STAGE",
        help=f"stages to run (default: all): {', '.join(STAGES)}",
    )
    add_recipe_arguments(
        parser,
        ShapesRecipe,
        "shapes_",
        "decoder.training.max_steps=10",
        option="--schedule",
        default="full",
        option_help="smoke, full, or a recipe file (default: full)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="stages run at once, each in its own process once its inputs are done (default: 1; 2 on a "
        "2-core machine)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    # on SIGTERM (and SIGINT) the exit status is the shell's 128 + signal number
    try:
        with interrupted_by_signals():
            if args.jobs > 1:
                outcome = train_shapes_in_parallel(
                    args.output_dir,
                    args.schedule,
                    args.stages,
                    args.overrides,
                    args.jobs,
                    args.num_threads or 1,
                )
            else:
                overrides = args.overrides + ([f"num_threads={args.num_threads}"] if args.num_threads else [])
                outcome = train_shapes(args.output_dir, args.schedule, args.stages, overrides)
    except RunInterrupted as interruption:
        logger.warning("train-shapes: stopped by %s", signal.Signals(interruption.signum).name)
        return 128 + interruption.signum
    for stage, status in outcome.items():
        print(f"{stage:18s} {status}")
    times_path = Path(args.output_dir) / STAGE_TIMES_FILE
    if times_path.exists():
        print(f"stage wall times (s): {times_path.read_text()}")
    return 0


__all__ = ["longest_stage_chain", "main", "run_stage_processes", "train_shapes", "train_shapes_in_parallel"]


if __name__ == "__main__":
    raise SystemExit(main())
