"""Text-to-image latency of the shipped SEED-Shapes model: decoder accuracy against steps and scheduler, and the
speed-up of the shipped decoder default over the old one (DPM-Solver++ 2M, 25 steps), measured interleaved.

    python benchmarks/text_to_image_latency.py --threads 1          # every setting, seeds 0 and 1 (an hour)
    python benchmarks/text_to_image_latency.py --settings dpm++2m-25 unipc-8 --seeds 0 1 2
    python benchmarks/text_to_image_latency.py --quick               # smoke run: 10 prompts, 3 settings

Accuracy: the LLM writes the codes of held-out captions once (`seed-text-to-image`, `seed`, batches of 25), then
every decoder setting draws the same codes with the same per-prompt noise the pipeline uses, so the settings differ
in the decoder only; the drawings are read back by the pixel attribute reader ("all": all five attributes right).
Reconstruction (image -> codes -> image) is measured as `seed-hf evaluate-shapes` does. Timing: one full pipeline
call (one prompt, and 25 prompts in one batch), old default and shipped default alternating (A B A B ...); the
speed-up is the ratio of the medians, with each side's spread (max/min). Prints Markdown; `--output` writes JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
MODEL = REPOSITORY / "models" / "seed-shapes"
BATCH_SIZE = 25
OLD_DEFAULT = "dpm++2m-25"
# name -> (diffusers scheduler class, overrides of the shipped scheduler config, steps). The shipped config (UniPC,
# v-prediction) keeps the DPM-Solver++ keys of the training scheduler, so `from_config` rebuilds either exactly.
SETTINGS: dict[str, tuple[str, dict, int]] = {
    **{f"dpm++2m-{n}": ("DPMSolverMultistepScheduler", {}, n) for n in (25, 20, 15, 12, 10, 8, 6, 5, 4)},
    **{
        f"dpm++2m-karras-{n}": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, n)
        for n in (10, 8, 6)
    },
    **{f"dpm++3m-{n}": ("DPMSolverMultistepScheduler", {"solver_order": 3}, n) for n in (10, 8, 6)},
    **{f"unipc-{n}": ("UniPCMultistepScheduler", {}, n) for n in (10, 8, 6, 5)},
    **{f"dpm++2s-{n}": ("DPMSolverSinglestepScheduler", {}, n) for n in (10, 8)},
    **{f"deis-{n}": ("DEISMultistepScheduler", {}, n) for n in (10, 8)},
    **{f"euler-{n}": ("EulerDiscreteScheduler", {}, n) for n in (10,)},
    **{f"ddim-{n}": ("DDIMScheduler", {}, n) for n in (10,)},
    # DDIM clips its x0 estimate to [-1, 1] by default, which latents of this VAE exceed
    **{f"ddim-noclip-{n}": ("DDIMScheduler", {"clip_sample": False}, n) for n in (10,)},
}
QUICK_SETTINGS = (OLD_DEFAULT, "unipc-8", "dpm++2m-8")


def make_scheduler(shipped, name: str):
    """The scheduler of setting `name`, built from the config of the `shipped` scheduler."""
    import diffusers

    class_name, overrides, _ = SETTINGS[name]
    return getattr(diffusers, class_name).from_config(shipped.config, **overrides)


def drawn_codes(drawer, split: str, num_samples: int, seed: int):
    """The codes the LLM writes for `num_samples` held-out captions, and the combinations they should show."""
    from seed_hf.training.shapes import caption_dataset

    rows = caption_dataset(split, num_samples, seed=seed)
    # the decoder's output is not needed here: one step, latents only
    outputs = drawer(
        list(rows["text"]), seed=seed, batch_size=BATCH_SIZE, num_inference_steps=1, output_type="latent"
    )
    if any(len(output["image_codes"]) != 1 for output in outputs):
        raise RuntimeError(
            "an answer does not hold exactly one image; the table would not compare like with like"
        )
    return torch.stack([output["image_codes"][0] for output in outputs]), list(rows["combination"])


def decode_like_the_pipeline(detokenizer, codes: torch.Tensor, seed: int, steps: int) -> list:
    """Draw `codes` as `pipeline(..., seed=seed, batch_size=25)` does: prompt `i` draws its noise from
    `torch.Generator().manual_seed(seed + i)`, one de-tokenizer call per batch."""
    images = []
    for start in range(0, len(codes), BATCH_SIZE):
        batch = codes[start : start + BATCH_SIZE]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))]
        images += detokenizer(image_codes=batch, generator=generators, num_inference_steps=steps).images
    return images


def accuracy_table(evaluator, names, samples: int, seeds) -> list[dict]:
    """Text-to-image (per seed) and reconstruction all-attribute accuracy of each setting."""
    from seed_hf.training.shapes.reader import attribute_accuracy

    detokenizer = evaluator.text_to_image.detokenizer
    shipped = detokenizer.scheduler
    drawn = {seed: drawn_codes(evaluator.text_to_image, "test_seen", samples, seed) for seed in seeds}
    rows = []
    try:
        for name in names:
            detokenizer.scheduler = make_scheduler(shipped, name)
            steps = SETTINGS[name][2]
            row = {"setting": name, "steps": steps, "count": samples}
            try:
                for seed, (codes, targets) in drawn.items():
                    images = decode_like_the_pipeline(detokenizer, codes, seed, steps)
                    row[f"text_to_image_seed{seed}"] = _all_right(attribute_accuracy(images, targets))
                evaluator.decoder_settings["num_inference_steps"] = steps
                row["reconstruction"] = _all_right(evaluator.evaluate_reconstruction("test_seen")[0])
            except (IndexError, ValueError) as error:  # some scheduler configurations fail in diffusers
                row["error"] = f"{type(error).__name__}: {error}"
            rows.append(row)
            print(_table_row(row, seeds), flush=True)
    finally:
        detokenizer.scheduler = shipped
    return rows


def _all_right(result: dict) -> int:
    return round(result["all"] * result["count"])


def _table_row(row: dict, seeds) -> str:
    cells = [
        f"{row[key]}/{row['count']}" if key in row else f"fails ({row['error']})"
        for key in (*(f"text_to_image_seed{seed}" for seed in seeds), "reconstruction")
    ]
    return f"| {row['setting']} | {row['steps']} | " + " | ".join(cells) + " |"


def old_default_call(drawer) -> Callable:
    """`prompts -> drawer(prompts)` with the old decoder default (25 DPM-Solver++ steps) swapped in for the call."""
    detokenizer = drawer.detokenizer
    shipped = detokenizer.scheduler
    old_scheduler = make_scheduler(shipped, OLD_DEFAULT)
    old_steps = SETTINGS[OLD_DEFAULT][2]

    def call(prompts):
        detokenizer.scheduler = old_scheduler
        try:
            return drawer(prompts, seed=0, batch_size=BATCH_SIZE, num_inference_steps=old_steps)
        finally:
            detokenizer.scheduler = shipped

    return call


def latency_rows(drawer, repeats: int) -> list[dict]:
    """One pipeline call with the shipped default against the old default (`run_all.compare`: ours = shipped)."""
    from run_all import compare

    from seed_hf.training.shapes import caption_dataset

    old_call = old_default_call(drawer)
    prompts = list(caption_dataset("test_seen", BATCH_SIZE, seed=0)["text"])
    return [
        compare(
            f"text-to-image, {name}: shipped decoder default vs {OLD_DEFAULT} (s)",
            lambda b=batch: drawer(b, seed=0, batch_size=BATCH_SIZE),
            lambda b=batch: old_call(b),
            repeats,
        )
        for name, batch in (("one prompt", prompts[0]), (f"{BATCH_SIZE} prompts in one batch", prompts))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 prompts, 3 settings, one seed: a smoke run")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), help="decoder settings to measure")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the prompt samples")
    parser.add_argument("--samples", type=int, default=100, help="held-out prompts (and images) per seed")
    parser.add_argument(
        "--repeats", type=int, help="timed calls per side (median; at least 3; default 5, quick 3)"
    )
    parser.add_argument("--skip-accuracy", action="store_true", help="timings only")
    parser.add_argument("--skip-latency", action="store_true", help="accuracy table only")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's); 1 keeps timings sane on a shared machine",
    )
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3, got {args.repeats}")
    names = args.settings or (QUICK_SETTINGS if args.quick else list(SETTINGS))
    seeds, samples = ([0], 10) if args.quick else (args.seeds, args.samples)

    import seed_hf  # noqa: F401  (registers the pipeline tasks)
    from seed_hf.training.shapes.evaluate import ShapesEvaluator

    evaluator = ShapesEvaluator(MODEL, num_samples=samples, seed=seeds[0], batch_size=BATCH_SIZE)
    drawer = evaluator.text_to_image
    config = drawer.detokenizer.config
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; shipped decoder default: "
        f"{type(drawer.detokenizer.scheduler).__name__}, {config.default_num_inference_steps} steps, guidance "
        f"{config.default_guidance_scale}"
    )
    results: dict = {"samples": samples, "seeds": seeds}
    if not args.skip_accuracy:
        seed_columns = " | ".join(f"text-to-image all, seed {seed}" for seed in seeds)
        print(
            f"\n| setting | steps | {seed_columns} | reconstruction all |\n|---|---|{'---|' * len(seeds)}---|"
        )
        results["accuracy"] = accuracy_table(evaluator, names, samples, seeds)
    if not args.skip_latency:
        print("\n| call | shipped default | old default | speed-up |\n|---|---|---|---|")
        results["latency"] = latency_rows(drawer, args.repeats)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
