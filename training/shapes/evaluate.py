"""`seed-hf evaluate-shapes`: measure a SEED-Shapes checkpoint against the world's known truth.

Every figure is computed on held-out samples (`seed_hf.training.shapes` splits): `test_seen` (seen attribute
combinations, with caption / question / instruction texts that no training record used) and `test_unseen`
(the 10% of combinations kept out of training entirely), reported separately. Generated images are judged by
`seed_hf.training.shapes.reader.read_attributes`, which reads pixels and knows nothing of the models.

Figures (per split):

- `text_to_image`: per-attribute and all-attribute accuracy of the image drawn for a held-out caption
  (`seed-text-to-image`, constrained decoding), and the rate of answers holding exactly one complete image;
- `caption`: attribute accuracy of the captions written for images (`seed-image-to-text`), read back with
  `texts.parse_caption` (an attribute the caption does not name counts as wrong);
- `vqa`: exact-answer accuracy on held-out questions, overall and per question type;
- `edit`: an image and a held-out instruction -> the drawn image shows the target combination (all attributes);
- `reconstruction`: image -> SEED codes -> de-tokenizer -> image keeps the attributes;
- `retrieval`: caption -> image retrieval with the causal embedding (the stage-1 contrastive head over the
  last causal query, as SEED evaluates its tokenizer), R@1 / R@5 over the split's images;
- `valid_images`: rate of text-to-image answers with exactly one complete image and no stray image codes,
  with constrained decoding (as the pipeline draws) and without any constraint (the model alone);
- `tokenizer_bf16_code_agreement`: fraction of code positions the visual tokenizer gives identically in bf16
  and fp32;
- `clip_qa`, `composition`, `in_context_edit`: the tasks of several images (`evaluate_sequences`).

The metrics go to `OUTPUT/metrics.json`; `OUTPUT/grid.png` shows, per split, the truth, the text-to-image
drawing, the reconstruction and an edit for a few samples.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from seed_hf.io_utils import write_text_atomically
from seed_hf.logging_utils import get_logger

from . import records, texts, world
from .evaluate_sequences import SEQUENCE_TASKS, SequenceTaskEvaluation, accuracy_per_type
from .reader import attribute_accuracy, invalid_reading, read_attributes
from .run import IMAGE_TEXT_MODEL_FOLDER, SHAPES_DECODER_DEFAULTS, SHAPES_SAMPLING, TRAINING_TIMES_FILE

logger = get_logger(__name__)
# the figures measured per split, in the order they are measured
TASKS = (
    "text_to_image",
    "reconstruction",
    "edit",
    "caption",
    "vqa",
    "retrieval",
    "valid_images",
    "tokenizer_bf16_code_agreement",
    *SEQUENCE_TASKS,
)

# the metrics as shipped in a checkpoint folder, beside its model cards
EVAL_METRICS_FILE = "eval_metrics.json"

SPLITS = ("test_seen", "test_unseen")
# De-tokenizer settings for SEED-Shapes, the checkpoint's defaults (see `run.SHAPES_DECODER_DEFAULTS`), given
# explicitly so that the figures hold for them: used by the evaluation, the main job and the model card.
SHAPES_DECODER_SETTINGS = {
    "num_inference_steps": SHAPES_DECODER_DEFAULTS["default_num_inference_steps"],
    "decoder_guidance_scale": SHAPES_DECODER_DEFAULTS["default_guidance_scale"],
}
GRID_SAMPLES = 6
# new-token budget of a text answer (the world's longest caption is ~25 tokens), and after a drawn image
ANSWER_TOKENS = 48
GRID_CELL = 96


def load_shapes_pipelines(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """The `seed-text-to-image` and `seed-image-to-text` pipelines of a checkpoint folder, sharing one model."""
    from transformers import pipeline

    import seed_hf  # noqa: F401  (registers the tasks)

    text_to_image = pipeline("seed-text-to-image", model=str(model_dir), dtype=dtype)
    image_to_text = pipeline(
        "seed-image-to-text", model=text_to_image.model, processor=text_to_image.processor
    )
    return text_to_image, image_to_text


def _normalise_answer(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


def _drawn_image_readings(outputs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Readings of the one image each text-to-image answer should hold (invalid when it has not exactly one)."""
    readings, images = [], []
    for output in outputs:
        drawn = output["images"]
        if len(drawn) == 1:
            readings.append(read_attributes(drawn[0]))
            images.append(drawn[0])
        else:
            readings.append(invalid_reading(f"the answer holds {len(drawn)} images"))
            images.append(None)
    return readings, images


def _one_complete_image(segments: Sequence[Any]) -> bool:
    """Exactly one complete image and no broken one (text around it is allowed, stray codes are not)."""
    from seed_hf.modeling.generation_seed_llama import ImageSegment

    images = [segment for segment in segments if isinstance(segment, ImageSegment)]
    return len(images) == 1 and images[0].complete


@torch.no_grad()
def generate_image_answers(
    model, processor, prompts: Sequence[str], constraints: dict[str, bool], seed: int, batch_size: int
) -> list[torch.Tensor]:
    """The new ids of the answer to each text-to-image prompt, `batch_size` prompts at a time, sampled with the
    release's settings after `torch.manual_seed(seed + first prompt of the batch)`, with the generation
    `constraints` (`constrain_images`, `force_image`)."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        inputs = processor.apply_chat_template(
            [[{"role": "user", "content": prompt}] for prompt in prompts[start : start + batch_size]],
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        torch.manual_seed(seed + start)
        sequences = model.generate(
            **inputs,
            **constraints,
            **SHAPES_SAMPLING,
            max_new_tokens=model.config.tokens_per_image + ANSWER_TOKENS,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        answers.extend(sequences[:, inputs["input_ids"].shape[1] :])
    return answers


def _valid_image_rate(text_to_image, prompts: Sequence[str], seed: int, batch_size: int) -> dict[str, float]:
    """Text-to-image answers with exactly one complete image, with and without constrained decoding."""
    from seed_hf.modeling.generation_seed_llama import ImageSegment

    model, processor = text_to_image.model, text_to_image.processor
    layout = model.image_token_layout
    rates = {}
    for name, constraints in (
        ("constrained", {"constrain_images": True, "force_image": True}),
        ("unconstrained", {"constrain_images": False}),
    ):
        valid = 0
        for row in generate_image_answers(model, processor, prompts, constraints, seed, batch_size):
            segments = processor.parse_generation(row)
            stray_codes = int(layout.is_code(row).sum()) - sum(
                segment.num_codes for segment in segments if isinstance(segment, ImageSegment)
            )
            valid += _one_complete_image(segments) and stray_codes == 0
        rates[name] = valid / len(prompts)
    return rates


class ShapesEvaluator(SequenceTaskEvaluation):
    """
    Runs the evaluation of one checkpoint (see the module docstring).

    Args:
        model_dir: a folder written by `save_seed_checkpoint` (`train-shapes` writes one as `seed_shapes/`).
        image_text_model: the tokenizer's stage-1 image-text model (`train-shapes` leaves it in
            `tokenizer_stage1/image_text_model/`), needed for the retrieval figures only; by default the
            checkpoint's own `image_text_model/`, if any.
        num_samples: held-out samples per split and task.
        seed: seed of the held-out samples and of sampling.
        batch_size: generation batch size.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        num_samples: int = 100,
        seed: int = 0,
        batch_size: int = 25,
        image_text_model: str | os.PathLike | None = None,
    ):
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(
                f"`model_dir` must be a SEED checkpoint folder (config.json), got {str(model_dir)!r}"
            )
        self.image_text_model = Path(
            self.model_dir / IMAGE_TEXT_MODEL_FOLDER if image_text_model is None else image_text_model
        )
        self.num_samples = num_samples
        self.seed = seed
        self.batch_size = batch_size
        self.text_to_image, self.image_to_text = load_shapes_pipelines(self.model_dir)
        self.decoder_settings = dict(SHAPES_DECODER_SETTINGS)
        self.grid_rows: list[tuple[str, list[Any]]] = []

    # ------------------------------------------------------------------------------------------------- tasks
    def _draw(
        self, prompts: Sequence[Any], force_image: bool = True, answer_tokens: int = ANSWER_TOKENS
    ) -> list[dict[str, Any]]:
        """Text-to-image answers; `answer_tokens`: the budget for text besides the image."""
        return self.text_to_image(
            list(prompts),
            seed=self.seed,
            batch_size=self.batch_size,
            max_new_tokens=self.text_to_image.model.config.tokens_per_image + answer_tokens,
            force_image=force_image,
            **self.decoder_settings,
        )

    def _draw_readings(
        self, prompts: Sequence[Any], **draw_options: Any
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        return _drawn_image_readings(self._draw(prompts, **draw_options))

    def _read(self, inputs: Sequence[Any], max_new_tokens: int = ANSWER_TOKENS) -> list[str]:
        outputs = self.image_to_text(
            list(inputs), seed=self.seed, batch_size=self.batch_size, max_new_tokens=max_new_tokens
        )
        return [output[0]["generated_text"] for output in outputs]

    def evaluate_text_to_image(self, split: str) -> tuple[dict[str, Any], list[Any]]:
        rows = records.caption_dataset(split, self.num_samples, seed=self.seed)
        outputs = self._draw(list(rows["text"]))
        readings, images = _drawn_image_readings(outputs)
        result = attribute_accuracy(readings, list(rows["combination"]))
        result["one_image_rate"] = float(np.mean([len(output["images"]) == 1 for output in outputs]))
        return result, [rows[:GRID_SAMPLES]["image"], images[:GRID_SAMPLES], rows[:GRID_SAMPLES]["text"]]

    def evaluate_caption(self, split: str) -> dict[str, Any]:
        rows = records.caption_dataset(split, self.num_samples, seed=self.seed + 1)
        captions = self._read(rows["image"])
        parsed = [texts.parse_caption(caption) for caption in captions]
        per_attribute = {
            name: float(
                np.mean(
                    [reading.get(name) == truth for reading, truth in zip(parsed, rows[name], strict=True)]
                )
            )
            for name in world.ATTRIBUTE_NAMES
        }
        all_right = [
            all(reading.get(name) == row[name] for name in world.ATTRIBUTE_NAMES)
            for reading, row in zip(parsed, rows, strict=True)
        ]
        return {
            **per_attribute,
            "mean": float(np.mean(list(per_attribute.values()))),
            "all": float(np.mean(all_right)),
            "count": len(rows),
            "examples": captions[:3],
        }

    def evaluate_vqa(self, split: str) -> dict[str, Any]:
        rows = records.vqa_dataset(split, self.num_samples, seed=self.seed)
        inputs = [{"image": row["image"], "question": row["question"]} for row in rows]
        right = [
            _normalise_answer(answer) == _normalise_answer(truth)
            for answer, truth in zip(self._read(inputs), rows["answer"], strict=True)
        ]
        return {**accuracy_per_type(rows["question_type"], right), "count": len(rows)}

    def evaluate_edit(self, split: str) -> tuple[dict[str, Any], list[Any]]:
        rows = records.edit_dataset(split, self.num_samples, seed=self.seed)
        conversations = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": row["image"]},
                        {"type": "text", "text": row["instruction"]},
                    ],
                }
            ]
            for row in rows
        ]
        readings, images = self._draw_readings(conversations)
        result = attribute_accuracy(readings, list(rows["target_combination"]))
        result["edited_attribute"] = float(
            np.mean(
                [
                    reading[name] == row[f"target_{name}"]
                    for reading, row, name in zip(readings, rows, rows["edited_attribute"], strict=True)
                ]
            )
        )
        return result, [
            rows[:GRID_SAMPLES]["image"],
            images[:GRID_SAMPLES],
            rows[:GRID_SAMPLES]["instruction"],
        ]

    def _split_images(self, split: str) -> tuple[list[int], list[Image.Image]]:
        combinations = list(world.split_combinations(split))
        rng = np.random.default_rng(self.seed)
        chosen = sorted(
            rng.choice(len(combinations), min(self.num_samples, len(combinations)), replace=False)
        )
        indices = [combinations[int(position)] for position in chosen]
        return indices, [world.render(index) for index in indices]

    @torch.no_grad()
    def evaluate_reconstruction(self, split: str) -> tuple[dict[str, Any], list[Any]]:
        indices, images = self._split_images(split)
        visual_tokenizer = self.text_to_image.model.visual_tokenizer
        pixel_values = self.text_to_image.processor.image_processor(images, return_tensors="pt")[
            "pixel_values"
        ]
        codes = visual_tokenizer.encode(pixel_values.to(visual_tokenizer.dtype))
        decoded = self.text_to_image.detokenizer(
            image_codes=codes,
            generator=torch.Generator().manual_seed(self.seed),
            num_inference_steps=self.decoder_settings["num_inference_steps"],
            guidance_scale=self.decoder_settings["decoder_guidance_scale"],
        ).images
        result = attribute_accuracy(decoded, indices)
        return result, [images[:GRID_SAMPLES], decoded[:GRID_SAMPLES]]

    @torch.no_grad()
    def evaluate_bf16_agreement(self, split: str) -> dict[str, Any]:
        _, images = self._split_images(split)
        visual_tokenizer = self.text_to_image.model.visual_tokenizer
        pixel_values = self.text_to_image.processor.image_processor(images, return_tensors="pt")[
            "pixel_values"
        ]
        codes = visual_tokenizer.float().encode(pixel_values.float())
        bf16_codes = (
            copy.deepcopy(visual_tokenizer).to(torch.bfloat16).encode(pixel_values.to(torch.bfloat16))
        )
        return {"agreement": float((codes == bf16_codes).float().mean()), "positions": int(codes.numel())}

    @torch.no_grad()
    def evaluate_retrieval(self, split: str) -> dict[str, Any] | None:
        from transformers import AutoTokenizer

        from ..tokenizer_models import SeedTokenizerForImageTextContrastive

        folder = self.image_text_model
        if not folder.is_dir():
            return None
        model = SeedTokenizerForImageTextContrastive.from_pretrained(folder).eval()
        # the model's own config: AutoConfig does not know the stage-1 model type and would warn
        text_tokenizer = AutoTokenizer.from_pretrained(folder, config=model.config)
        combinations = list(world.split_combinations(split))
        image_processor = self.text_to_image.processor.image_processor
        image_embeds = torch.cat(
            [
                model.image_embeddings(
                    image_processor(
                        [world.render(index) for index in combinations[start : start + 128]],
                        return_tensors="pt",
                    )["pixel_values"]
                )
                for start in range(0, len(combinations), 128)
            ]
        )
        rows = records.caption_dataset(split, self.num_samples, seed=self.seed + 2)
        text = text_tokenizer(
            list(rows["text"]),
            padding=True,
            truncation=True,
            max_length=model.config.qformer_config.max_position_embeddings,
            return_tensors="pt",
        )
        text_embeds = model.text_embeddings(text["input_ids"], text["attention_mask"])
        ranking = (text_embeds @ image_embeds.t()).argsort(dim=1, descending=True)
        position_of = {index: position for position, index in enumerate(combinations)}
        targets = torch.tensor([position_of[int(index)] for index in rows["combination"]])
        rank = (ranking == targets[:, None]).float().argmax(dim=1)
        # the retrieval model's causal Q-Former must be the shipped tokenizer's (stage 2 keeps it frozen)
        shipped = self.text_to_image.model.visual_tokenizer
        sample = image_processor([world.render(index) for index in combinations[:8]], return_tensors="pt")
        difference = (
            (
                model.seed_tokenizer.causal_embeddings(sample["pixel_values"])
                - shipped.float().causal_embeddings(sample["pixel_values"])
            )
            .abs()
            .max()
        )
        return {
            "r@1": float((rank < 1).float().mean()),
            "r@5": float((rank < 5).float().mean()),
            "queries": len(rows),
            "gallery": len(combinations),
            "causal_embedding_max_difference_vs_shipped_tokenizer": float(difference),
        }

    # ------------------------------------------------------------------------------------------------- all
    def evaluate(self, output_dir: str | os.PathLike) -> dict[str, Any]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        metrics: dict[str, Any] = {
            "model": str(self.model_dir),
            "settings": {
                "num_samples": self.num_samples,
                "seed": self.seed,
                "llm_sampling": "release defaults: top_p 0.5, temperature 1.0",
                **self.decoder_settings,
                "decoder_scheduler": type(self.text_to_image.detokenizer.scheduler).__name__,
            },
        }
        # one bar over every (split, task): the whole evaluation takes minutes on a CPU
        progress = tqdm(total=len(SPLITS) * len(TASKS), desc="evaluate-shapes", unit="task")

        def measured(split: str, task: str, compute: Callable[..., Any], *arguments: Any) -> Any:
            progress.set_postfix_str(f"{split}: {task}")
            result = compute(*arguments)
            progress.update()
            return result

        for split in SPLITS:
            text_to_image, t2i_grid = measured(split, "text_to_image", self.evaluate_text_to_image, split)
            reconstruction, reconstruction_grid = measured(
                split, "reconstruction", self.evaluate_reconstruction, split
            )
            edit, edit_grid = measured(split, "edit", self.evaluate_edit, split)
            composition, composition_grid = measured(split, "composition", self.evaluate_composition, split)
            in_context_edit, in_context_grid = measured(
                split, "in_context_edit", self.evaluate_in_context_edit, split
            )
            prompts = list(records.caption_dataset(split, self.num_samples, seed=self.seed + 3)["text"])
            metrics[split] = {
                "text_to_image": text_to_image,
                "caption": measured(split, "caption", self.evaluate_caption, split),
                "vqa": measured(split, "vqa", self.evaluate_vqa, split),
                "edit": edit,
                "reconstruction": reconstruction,
                "retrieval": measured(split, "retrieval", self.evaluate_retrieval, split),
                "valid_images": measured(
                    split,
                    "valid_images",
                    _valid_image_rate,
                    self.text_to_image,
                    prompts,
                    self.seed,
                    self.batch_size,
                ),
                "tokenizer_bf16_code_agreement": measured(
                    split, "tokenizer_bf16_code_agreement", self.evaluate_bf16_agreement, split
                ),
                "clip_qa": measured(split, "clip_qa", self.evaluate_clip_qa, split),
                "composition": composition,
                "in_context_edit": in_context_edit,
            }
            self.grid_rows += [
                (f"{split}: truth", t2i_grid[0]),
                (f"{split}: text-to-image", t2i_grid[1]),
                (f"{split}: truth", reconstruction_grid[0]),
                (f"{split}: reconstruction", reconstruction_grid[1]),
                (f"{split}: edit input", edit_grid[0]),
                (f"{split}: edit output", edit_grid[1]),
                (f"{split}: composition", composition_grid[:GRID_SAMPLES]),
                (f"{split}: in-context edit", in_context_grid[:GRID_SAMPLES]),
            ]
            logger.info("evaluate-shapes: %s done (%.0f s)", split, time.perf_counter() - start)
        progress.close()
        metrics["wall_time_s"] = round(time.perf_counter() - start, 1)
        write_text_atomically(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        make_grid(self.grid_rows).save(output_dir / "grid.png")
        return metrics


def make_grid(rows: Sequence[tuple[str, Sequence[Any]]], cell: int = GRID_CELL) -> Image.Image:
    """A labelled grid: one row per `(label, images)`; a missing image (`None`) is left as a crossed cell."""
    label_width = 200
    columns = max((len(images) for _, images in rows), default=1)
    grid = Image.new("RGB", (label_width + columns * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for row, (label, images) in enumerate(rows):
        top = row * cell
        draw.text((4, top + cell // 2 - 6), label, fill="black")
        for column, image in enumerate(images):
            left = label_width + column * cell
            if image is None:
                draw.line((left, top, left + cell, top + cell), fill="red", width=2)
                continue
            grid.paste(image.convert("RGB").resize((cell - 4, cell - 4), Image.NEAREST), (left + 2, top + 2))
    return grid


def check_acceptance(metrics: dict[str, Any]) -> dict[str, bool]:
    """The SEED-Shapes acceptance lines (on `test_seen`), each `True` when it holds."""
    seen = metrics["test_seen"]
    text_to_image = seen["text_to_image"]
    return {
        "text_to_image every attribute >= 0.9": all(
            text_to_image[name] >= 0.9 for name in world.ATTRIBUTE_NAMES
        ),
        "text_to_image all attributes >= 0.8": text_to_image["all"] >= 0.8,
        "caption every attribute >= 0.9": all(seen["caption"][name] >= 0.9 for name in world.ATTRIBUTE_NAMES),
        "vqa >= 0.9": seen["vqa"]["accuracy"] >= 0.9,
        "edit >= 0.8": seen["edit"]["all"] >= 0.8,
        "reconstruction all attributes >= 0.9": seen["reconstruction"]["all"] >= 0.9,
        "clip qa >= 0.9": seen["clip_qa"]["accuracy"] >= 0.9,
        "composition all attributes >= 0.8": seen["composition"]["all"] >= 0.8,
        "in-context edit all attributes >= 0.8": seen["in_context_edit"]["all"] >= 0.8,
        "valid images with constraints == 1": seen["valid_images"]["constrained"] == 1.0,
        "tokenizer bf16 code agreement >= 0.95": all(
            metrics[split]["tokenizer_bf16_code_agreement"]["agreement"] >= 0.95 for split in SPLITS
        ),
    }


def write_shapes_model_cards(model_dir: str | os.PathLike, metrics: dict[str, Any]) -> list[Path]:
    """Write `metrics` into the checkpoint `model_dir` as `eval_metrics.json` and its model cards (README.md of the
    folder and its parts, `seed_hf.model_cards`), with the training times of its `training_stage_times.json`."""
    from seed_hf.model_cards import write_shapes_cards

    model_dir = Path(model_dir)
    metrics_path = model_dir / EVAL_METRICS_FILE
    write_text_atomically(metrics_path, json.dumps(metrics, indent=2) + "\n")
    times_path = model_dir / TRAINING_TIMES_FILE
    stage_times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    return [*write_shapes_cards(model_dir, metrics, stage_times), metrics_path]


def main(argv: Sequence[str] | None = None) -> int:
    """`seed-hf evaluate-shapes`: see the module docstring."""
    parser = argparse.ArgumentParser(prog="seed-hf evaluate-shapes", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a SEED checkpoint folder (e.g. models/seed-shapes)")
    parser.add_argument("--output-dir", required=True, help="where metrics.json and grid.png are written")
    parser.add_argument("--num-samples", type=int, default=100, help="held-out samples per split and task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out samples and of sampling")
    parser.add_argument("--batch-size", type=int, default=25, help="generation batch size")
    parser.add_argument(
        "--image-text-model",
        default=None,
        help="the stage-1 image-text model for the retrieval figures (train-shapes: "
        "RUN/tokenizer_stage1/image_text_model); default: MODEL/image_text_model if present",
    )
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--write-model-cards",
        action="store_true",
        help="also write the model cards (README.md) and eval_metrics.json into the model folder",
    )
    args = parser.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    evaluator = ShapesEvaluator(
        args.model, args.num_samples, args.seed, args.batch_size, image_text_model=args.image_text_model
    )
    metrics = evaluator.evaluate(args.output_dir)
    for line, holds in check_acceptance(metrics).items():
        print(f"{'PASS' if holds else 'FAIL'}  {line}")
    print(f"wrote {Path(args.output_dir) / 'metrics.json'} and {Path(args.output_dir) / 'grid.png'}")
    if args.write_model_cards:
        for path in write_shapes_model_cards(args.model, metrics):
            print(f"wrote {path}")
    return 0


__all__ = [
    "SHAPES_DECODER_SETTINGS",
    "ShapesEvaluator",
    "check_acceptance",
    "generate_image_answers",
    "load_shapes_pipelines",
    "main",
    "make_grid",
    "write_shapes_model_cards",
]
