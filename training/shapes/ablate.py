"""`seed-hf ablate-shapes`: the SEED-LLaMA paper's two ablations on SEED-Shapes, each as two `train-shapes` runs.

`seed-hf ablate-shapes ABLATION --output-dir OUT [--schedule smoke|ablation|full|FILE] [--set KEY.PATH=VALUE ...]
[--jobs N] [--num-samples N]` trains both arms of an ablation (same data, steps and seed; each arm a
`train-shapes` run in `OUT/<arm>/` with its own recipe overrides), measures them on held-out samples
(`seed_hf.training.shapes.ablate_measures`) and writes `OUT/results.json`, `OUT/results.md` (a table: arm and
each measure, with counts, the schedule and the command line) and `OUT/results.png` (a bar chart of the rates).

=====================  ===========================================================================================
ablation               arms
=====================  ===========================================================================================
causal-vs-bilateral    `causal`: the SEED tokenizer's Q-Former with a causal mask over its 32 queries (as shipped);
                       `bilateral`: every query sees every other (`SeedTokenizerConfig.causal_query_attention`).
                       The same LLM stages then run on each arm's codes. The paper: with bilateral codes 2134 of
                       5000 captions gave a complete image, with causal ones 4997 (image constraints off).
                       Measured: complete images with the constraints off, generated codes against the arm's own
                       codes of the asked image. Images are never drawn, so the VAE and decoder get one step.
lora-vs-full           `lora_then_full`: LLM pre-training with LoRA, merged, then full fine-tuning with the input
                       embeddings frozen (as shipped); `lora_only`: LoRA for the steps of both (an equal step
                       budget), merged, no full stage (its `llm_full/` is its `llm_merged/`). The same SFT follows.
                       Measured: held-out losses, pixel-judged text-to-image, caption and VQA accuracy.
=====================  ===========================================================================================

Stages that are the same in both arms (same recipe sections, same inputs: for causal-vs-bilateral the data,
teacher and VAE; for lora-vs-full everything before the LLM stages, and the decoder) are trained once, in the first
arm, and hard-linked into the second. `--jobs N` runs up to N stages of either arm at once, each in its own
one-thread process (`OUT/<arm>/logs/<stage>.log`); `--jobs 1` runs them one after the other in this process. Like
`train-shapes`, a rerun continues where the last one stopped: finished stages are skipped, an interrupted one
resumes from its last checkpoint, and the measures of an arm are kept in `OUT/<arm>/ablation_measures.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seed_hf.io_utils import staged_directory, write_text_atomically
from seed_hf.logging_utils import get_logger

from ..recipes import RECIPES_DIR, add_recipe_arguments
from .ablate_measures import MEASURES, RESULTS_FILE, ArmMeasures, write_report
from .recipe import ShapesRecipe, load_shapes_recipe, shapes_recipe_file
from .run import STAGE_INPUTS, STAGE_TIMES_FILE, STAGES, torch_threads
from .train import RunInterrupted, interrupted_by_signals, run_stage_processes, train_shapes

logger = get_logger(__name__)

ABLATION_SCHEDULES = ("smoke", "ablation", "full")
MEASURES_FILE = "ablation_measures.json"


@dataclasses.dataclass(frozen=True)
class AblationArm:
    """
    One arm of an ablation.

    Args:
        name: its folder in the output folder.
        description: what the arm trains, for the report.
        overrides: its recipe overrides, given the recipe both arms share (`"dotted.key=value"`, over `--set`).
        linked_stages: stages it does not train: `{stage: other stage of the arm}`, whose folder stands for it.
    """

    name: str
    description: str
    overrides: Callable[[ShapesRecipe], list[str]]
    linked_stages: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Ablation:
    """
    An ablation: two arms, the stages they share (trained in the first arm), overrides for both (before `--set`),
    the measures taken (`ablate_measures.MEASURES`) and the ones left out, with why.
    """

    name: str
    arms: tuple[AblationArm, AblationArm]
    shared_stages: tuple[str, ...]
    measures: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def _causal_queries(causal: bool) -> Callable[[ShapesRecipe], list[str]]:
    return lambda recipe: [f"tokenizer_stage1.config.causal_query_attention={str(causal).lower()}"]


def _lora_for_both_stages(recipe: ShapesRecipe) -> list[str]:
    """LoRA alone for the steps of LoRA and full fine-tuning together: an equal step budget."""
    steps = [getattr(recipe.llm, stage).training.get("max_steps", -1) for stage in ("lora", "full")]
    if min(steps) < 1:
        raise ValueError(
            "lora-vs-full compares equal step budgets: `llm.lora.training.max_steps` and "
            f"`llm.full.training.max_steps` must be set, got {steps}"
        )
    return [f"llm.lora.training.max_steps={sum(steps)}"]


ABLATIONS = {
    "causal-vs-bilateral": Ablation(
        name="causal-vs-bilateral",
        arms=(
            AblationArm("causal", "causal Q-Former (query i sees queries 0..i)", _causal_queries(True)),
            AblationArm(
                "bilateral", "bilateral Q-Former (every query sees every other)", _causal_queries(False)
            ),
        ),
        shared_stages=("data", "teacher", "vae"),
        measures=("complete_images", "codes_unconstrained", "codes_constrained"),
        # no image is drawn: the de-tokenizer is not measured, so its stages are as short as they can be
        overrides=("vae.training.max_steps=1", "decoder.training.max_steps=1"),
        skipped={"text_to_image": "the decoder is not trained here (1 step); the codes stand for the images"},
    ),
    "lora-vs-full": Ablation(
        name="lora-vs-full",
        arms=(
            AblationArm(
                "lora_then_full", "LoRA, merge, full fine-tuning (embeddings frozen)", lambda recipe: []
            ),
            AblationArm(
                "lora_only",
                "LoRA alone for the same number of steps, merged",
                _lora_for_both_stages,
                linked_stages={"llm_full": "llm_merged"},
            ),
        ),
        # every stage before the LLM's training
        shared_stages=STAGES[: STAGES.index("llm_init") + 1],
        measures=("held_out_loss", "text_to_image", "caption", "vqa", "codes_constrained"),
    ),
}


def _split(task: str) -> tuple[str, str]:
    arm, stage = task.split("/")
    return arm, stage


def ablation_schedule_file(schedule: str | os.PathLike) -> Path:
    """The recipe file of a schedule: `"smoke"`, `"ablation"`, `"full"` (the shipped `shapes_*.yaml`) or a path."""
    if schedule == "ablation":
        return RECIPES_DIR / "shapes_ablation.yaml"
    try:
        return shapes_recipe_file(schedule)
    except ValueError:
        raise ValueError(
            f"`schedule` must be one of {ABLATION_SCHEDULES} or a recipe file, got {schedule!r}"
        ) from None


class AblationRun:
    """
    The two runs of an ablation in `output_dir`: each arm's recipe, which arm trains each stage, the links.

    Args:
        output_dir: the ablation's folder; arm `name` runs in `output_dir/name`.
        ablation: the name of an ablation (`ABLATIONS`).
        schedule: `"smoke"`, `"ablation"`, `"full"` or a recipe file.
        overrides: `"dotted.key=value"` recipe overrides for both arms (the arms' own come after).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        ablation: str,
        schedule: str | os.PathLike = "ablation",
        overrides: Sequence[str] = (),
    ):
        if ablation not in ABLATIONS:
            raise ValueError(f"`ablation` must be one of {sorted(ABLATIONS)}, got {ablation!r}")
        self.output_dir = Path(output_dir)
        self.ablation = ABLATIONS[ablation]
        self.schedule_file = ablation_schedule_file(schedule)
        common = [*self.ablation.overrides, *overrides]
        shared_recipe = load_shapes_recipe(self.schedule_file, common)
        self.overrides = {arm.name: [*common, *arm.overrides(shared_recipe)] for arm in self.ablation.arms}
        # every arm's recipe is checked here, before any stage starts
        self.recipes = {
            name: load_shapes_recipe(self.schedule_file, overrides)
            for name, overrides in self.overrides.items()
        }
        self.arms = {arm.name: arm for arm in self.ablation.arms}
        self.first_arm = self.ablation.arms[0].name

    def arm_dir(self, arm: str) -> Path:
        return self.output_dir / arm

    def source(self, arm: str, stage: str) -> tuple[str, str]:
        """The `(arm, stage)` whose training writes the folder of `stage` in `arm`."""
        if stage in self.ablation.shared_stages and arm != self.first_arm:
            return self.first_arm, stage
        if stage in self.arms[arm].linked_stages:
            return self.source(arm, self.arms[arm].linked_stages[stage])
        return arm, stage

    def tasks(self) -> dict[str, list[str]]:
        """`{"arm/stage": ["arm/stage" it needs]}` for every stage trained, each after its inputs and stage by
        stage across the arms (so that `--jobs 2` runs the two arms side by side)."""
        order = [
            (arm, stage) for stage in STAGES for arm in self.arms if self.source(arm, stage) == (arm, stage)
        ]
        return {
            f"{arm}/{stage}": sorted({"/".join(self.source(arm, before)) for before in STAGE_INPUTS[stage]})
            for arm, stage in order
        }

    def link(self, arm: str, stage: str) -> None:
        """Make the folder of `stage` in `arm` exist, hard-linking it from the stage it comes from if needed."""
        target = self.arm_dir(arm) / stage
        source_arm, source_stage = self.source(arm, stage)
        if target.exists() or (source_arm, source_stage) == (arm, stage):
            return
        self.link(source_arm, source_stage)
        with staged_directory(target) as staging:
            # hard links: the folders are read only by the stages after them
            shutil.copytree(
                self.arm_dir(source_arm) / source_stage, staging, copy_function=os.link, dirs_exist_ok=True
            )

    def prepare(self, task: str) -> tuple[str, str]:
        """Link the inputs of a task's stage into its arm; returns `(arm, stage)`."""
        arm, stage = _split(task)
        for before in STAGE_INPUTS[stage]:
            self.link(arm, before)
        return arm, stage

    def stage_command(self, arm: str, stage: str) -> list[str]:
        """The `train-shapes` process of one stage of an arm (one torch thread)."""
        command = [
            sys.executable,
            "-m",
            "seed_hf.training.shapes.train",
            "--output-dir",
            str(self.arm_dir(arm)),
        ]
        command += ["--schedule", str(self.schedule_file), *(f"--set={item}" for item in self.overrides[arm])]
        return command + ["--num-threads", "1", "--stages", stage]

    def train(self, jobs: int = 1, poll_seconds: float = 1.0) -> list[str]:
        """Train every stage not yet done (see the module docstring); returns the tasks trained."""
        tasks = self.tasks()
        waiting = [task for task in tasks if not (self.output_dir / task).exists()]
        if jobs == 1:
            for task in waiting:
                arm, stage = self.prepare(task)
                logger.info("ablate-shapes: %s", task)
                train_shapes(self.arm_dir(arm), self.recipes[arm], stages=[stage])
        else:

            def start(task: str) -> subprocess.Popen:
                arm, stage = self.prepare(task)
                log_dir = self.arm_dir(arm) / "logs"
                log_dir.mkdir(parents=True, exist_ok=True)
                with open(log_dir / f"{stage}.log", "a") as log:
                    return subprocess.Popen(
                        self.stage_command(arm, stage), stdout=log, stderr=subprocess.STDOUT
                    )

            _, failed = run_stage_processes(waiting, tasks, start, jobs, poll_seconds, "ablate-shapes stages")
            if failed:
                logs = ", ".join(
                    str(self.output_dir / arm / "logs" / f"{stage}.log") for arm, stage in map(_split, failed)
                )
                raise RuntimeError(f"stages {failed} failed; see {logs}")
        for arm in self.arms:  # every arm folder a whole run
            for stage in STAGES:
                self.link(arm, stage)
        return waiting

    def measure(self, arm: str, num_samples: int) -> dict[str, Any]:
        """The ablation's measures of a trained arm, read back from its measures file when taken already."""
        checkpoint = self.arm_dir(arm) / "seed_shapes"
        settings = {
            "measures": list(self.ablation.measures),
            "num_samples": num_samples,
            "seed": self.recipes[arm].seed,
            # a retrained checkpoint is measured again
            "checkpoint_time_ns": (checkpoint / "config.json").stat().st_mtime_ns,
        }
        path = self.arm_dir(arm) / MEASURES_FILE
        if path.is_file() and (saved := json.loads(path.read_text()))["settings"] == settings:
            return saved["measures"]
        logger.info("ablate-shapes: measuring %s", arm)
        # as its stages ran: 2 threads on 2 busy cores ran 40x slower
        with torch_threads(self.recipes[arm].num_threads):
            arm_measures = ArmMeasures(
                self.arm_dir(arm), self.recipes[arm], num_samples, seed=settings["seed"]
            )
            measures = {
                name: arm_measures.measure(name) for name in MEASURES if name in self.ablation.measures
            }
        write_text_atomically(path, json.dumps({"settings": settings, "measures": measures}, indent=2) + "\n")
        return measures

    def results(self, num_samples: int, command: str | None = None) -> dict[str, Any]:
        """Measure both arms; the contents of `results.json`."""
        arms = {}
        for arm in self.ablation.arms:
            times_path = self.arm_dir(arm.name) / STAGE_TIMES_FILE
            arms[arm.name] = {
                "description": arm.description,
                "overrides": self.overrides[arm.name],
                "linked_stages": arm.linked_stages,
                "stage_times": json.loads(times_path.read_text()) if times_path.is_file() else {},
                "measures": self.measure(arm.name, num_samples),
            }
        return {
            "ablation": self.ablation.name,
            "schedule": str(self.schedule_file),
            "command": command,
            "shared_stages": {"stages": list(self.ablation.shared_stages), "trained_in": self.first_arm},
            "num_samples": num_samples,
            "skipped": self.ablation.skipped,
            "arms": arms,
        }


def ablate_shapes(
    output_dir: str | os.PathLike,
    ablation: str,
    schedule: str | os.PathLike = "ablation",
    overrides: Sequence[str] = (),
    jobs: int = 1,
    num_samples: int = 200,
    command: str | None = None,
    poll_seconds: float = 1.0,
) -> dict[str, Any]:
    """
    Train both arms of an ablation into `output_dir` (stages already there are skipped), measure them and write
    `results.json`, `results.md` and `results.png` there (see the module docstring).

    Args:
        output_dir: the ablation's folder.
        ablation: `"causal-vs-bilateral"` or `"lora-vs-full"`.
        schedule: `"smoke"`, `"ablation"` (the default, `recipes/shapes_ablation.yaml`), `"full"` or a recipe file.
        overrides: `"dotted.key=value"` recipe overrides for both arms.
        jobs: stages run at once (each in its own process when more than 1).
        num_samples: held-out samples per measure.
        command: the command line, recorded in the results.

    Returns:
        The results (as in `results.json`).
    """
    for name, value in (("jobs", jobs), ("num_samples", num_samples)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    run = AblationRun(output_dir, ablation, schedule, overrides)
    run.train(jobs, poll_seconds)
    results = run.results(num_samples, command)
    write_report(results, run.output_dir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf ablate-shapes`: see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="seed-hf ablate-shapes", description=__doc__.splitlines()[0])
    parser.add_argument("ablation", choices=sorted(ABLATIONS), help="the ablation to run")
    parser.add_argument(
        "--output-dir",
        required=True,
        help="the ablation's folder (one run per arm in it; finished stages skipped)",
    )
    add_recipe_arguments(
        parser,
        ShapesRecipe,
        "shapes_",
        "llm.sft.training.max_steps=400",
        option="--schedule",
        default="ablation",
        option_help="smoke, ablation, full, or a recipe file (default: ablation, recipes/shapes_ablation.yaml); "
        "--set applies to both arms",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="stages run at once, of either arm, each in its own one-thread process (default: 1; 2 on a 2-core "
        "machine)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=200, help="held-out samples per measure (default: 200)"
    )
    args = parser.parse_args(argv)
    for option, value in (("--jobs", args.jobs), ("--num-samples", args.num_samples)):
        if value < 1:
            parser.error(f"{option} must be at least 1, got {value}")
    # SIGTERM and SIGINT unwind as in train-shapes: stage processes terminated, staging folders removed
    try:
        with interrupted_by_signals():
            ablate_shapes(
                args.output_dir,
                args.ablation,
                args.schedule,
                args.overrides,
                jobs=args.jobs,
                num_samples=args.num_samples,
                command=shlex.join(["seed-hf", "ablate-shapes", *argv]),
            )
    except RunInterrupted as interruption:
        logger.warning("ablate-shapes: stopped by %s", signal.Signals(interruption.signum).name)
        return 128 + interruption.signum
    output_dir = Path(args.output_dir)
    print(f"wrote {output_dir / RESULTS_FILE}, {output_dir / 'results.md'} and {output_dir / 'results.png'}")
    return 0


__all__ = [
    "ABLATIONS",
    "ABLATION_SCHEDULES",
    "Ablation",
    "AblationArm",
    "AblationRun",
    "ablate_shapes",
    "ablation_schedule_file",
    "main",
]


if __name__ == "__main__":
    raise SystemExit(main())
