"""The measures of `seed-hf ablate-shapes` on one arm's finished run, and the report of an ablation.

Every measure is taken on held-out `test_seen` samples (texts no training record used) of the arm's `seed_shapes`
checkpoint, through [`ShapesEvaluator`] where it has the measure:

- `complete_images`: text-to-image answers, generated with the image constraints OFF (the LLM free to write any
  token), that hold exactly one complete image (`<img>`, 32 codes, `</img>`) and nothing else image-like;
- `codes_unconstrained` / `codes_constrained`: the generated codes against the arm's own tokenizer codes of a
  rendering of the asked combination, exact sequence and per-position agreement; an answer without exactly
  one complete image counts as wrong (constraints OFF), or the answer is forced to be one image (ON);
- `text_to_image`, `caption`, `vqa`: [`ShapesEvaluator`]'s pixel-judged text-to-image accuracy (needs a trained
  decoder), caption accuracy and VQA accuracy;
- `held_out_loss`: the mean next-token loss on held-out caption/image pairs (both orders) of the model at the
  end of pre-training (`llm_full/`) and on held-out conversations (captioning, generation, VQA) of the final
  model, over the tokens trained on.

[`write_report`] writes an ablation's results as `results.json`, a Markdown table (`results.md`: every measure
per arm, with counts) and a bar chart of the rates (`results.png`, drawn with PIL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image

from seed_hf.io_utils import write_file_atomically

from . import records
from .charts import bar_chart
from .evaluate import ShapesEvaluator, generate_image_answers
from .recipe import ShapesRecipe
from .run import DESCRIBE_QUESTION

SPLIT = "test_seen"
RESULTS_FILE = "results.json"
# the measures an ablation may ask for, in the order they are taken
MEASURES = (
    "complete_images",
    "codes_unconstrained",
    "codes_constrained",
    "text_to_image",
    "caption",
    "vqa",
    "held_out_loss",
)


def _rate(count: int, total: int) -> dict[str, Any]:
    return {"rate": count / total, "count": count, "total": total}


class ArmMeasures:
    """
    Takes the ablation measures (module docstring) of one finished `train-shapes` run.

    Args:
        run_dir: the arm's run folder (`seed_shapes/` and `llm_full/` in it).
        recipe: the arm's recipe (its SFT chat template frames the held-out conversations).
        num_samples: held-out samples per measure.
        seed: seed of the held-out samples and of sampling.
        batch_size: generation and loss batch size.
    """

    def __init__(
        self, run_dir: Path, recipe: ShapesRecipe, num_samples: int, seed: int = 0, batch_size: int = 25
    ):
        self.run_dir = Path(run_dir)
        self.recipe = recipe
        self.evaluator = ShapesEvaluator(
            self.run_dir / "seed_shapes", num_samples=num_samples, seed=seed, batch_size=batch_size
        )
        self.model = self.evaluator.text_to_image.model
        self.processor = self.evaluator.text_to_image.processor
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self._generations: dict[bool, list[torch.Tensor | None]] = {}
        self._prompts = records.caption_dataset(
            SPLIT, num_samples, seed=seed
        )  # as the evaluator's text-to-image

    def measure(self, name: str) -> dict[str, Any]:
        measures: dict[str, Callable[[], dict[str, Any]]] = {
            "complete_images": self.complete_images,
            "codes_unconstrained": lambda: self.code_accuracy(constrained=False),
            "codes_constrained": lambda: self.code_accuracy(constrained=True),
            "text_to_image": lambda: self.evaluator.evaluate_text_to_image(SPLIT)[0],
            "caption": lambda: self.evaluator.evaluate_caption(SPLIT),
            "vqa": lambda: self.evaluator.evaluate_vqa(SPLIT),
            "held_out_loss": self.held_out_loss,
        }
        if name not in measures:
            raise ValueError(f"unknown measure {name!r}; the measures are {list(MEASURES)}")
        return measures[name]()

    # ------------------------------------------------------------------------------------------- codes
    @torch.no_grad()
    def _encode(self, images: Sequence[Any]) -> torch.LongTensor:
        visual_tokenizer = self.model.visual_tokenizer
        pixel_values = self.processor.image_processor(list(images), return_tensors="pt")["pixel_values"]
        return visual_tokenizer.encode(pixel_values.to(visual_tokenizer.dtype))

    @torch.no_grad()
    def generated_codes(self, constrained: bool) -> list[torch.Tensor | None]:
        """The codes of the one complete image of each held-out text-to-image answer (`None`: not exactly one)."""
        from seed_hf.modeling.generation_seed_llama import ImageSegment

        if constrained in self._generations:
            return self._generations[constrained]
        prompts = list(self._prompts["text"])
        constraints = (
            {"constrain_images": True, "force_image": True} if constrained else {"constrain_images": False}
        )
        codes: list[torch.Tensor | None] = []
        for row in generate_image_answers(
            self.model, self.processor, prompts, constraints, self.seed, self.batch_size
        ):
            # a code outside an image is an image segment of its own, so one complete segment is the whole
            # image-like output
            images = [
                segment
                for segment in self.processor.parse_generation(row)
                if isinstance(segment, ImageSegment)
            ]
            codes.append(images[0].codes if len(images) == 1 and images[0].complete else None)
        self._generations[constrained] = codes
        return codes

    def complete_images(self) -> dict[str, Any]:
        codes = self.generated_codes(constrained=False)
        return _rate(sum(image is not None for image in codes), len(codes))

    def code_accuracy(self, constrained: bool) -> dict[str, Any]:
        generated = self.generated_codes(constrained)
        targets = self._encode(self._prompts["image"])
        exact = [
            image is not None and torch.equal(image, target)
            for image, target in zip(generated, targets, strict=True)
        ]
        agreement = [
            0.0 if image is None else float((image == target).float().mean())
            for image, target in zip(generated, targets, strict=True)
        ]
        return {
            **_rate(sum(exact), len(exact)),
            "agreement": sum(agreement) / len(agreement),
            "positions": int(targets.numel()),
        }

    # ------------------------------------------------------------------------------------------- loss
    def held_out_loss(self) -> dict[str, Any]:
        from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM

        pretrained = SeedLlamaForCausalLM.from_pretrained(self.run_dir / "llm_full").eval()
        return {
            "captions_after_pretraining": self._loss(pretrained, self._caption_records()),
            "chat_after_sft": self._loss(self.model, self._chat_records()),
        }

    def _caption_records(self) -> list[dict[str, Any]]:
        rows = records.caption_dataset(SPLIT, self.num_samples, seed=self.seed + 4)
        codes = self._encode(rows["image"])
        return [
            {"text": text, "image_codes": image}
            for text, image in zip(rows["text"], codes.tolist(), strict=True)
        ]

    def _chat_records(self) -> list[dict[str, Any]]:
        """Held-out conversations in the layouts of the SFT records: generation, captioning (alternately), VQA."""
        image, text = {"type": "image"}, lambda value: {"type": "text", "text": value}
        captions = records.caption_dataset(SPLIT, self.num_samples, seed=self.seed + 5)
        questions = records.vqa_dataset(SPLIT, self.num_samples, seed=self.seed + 6)
        conversations = [
            [("user", [image, text(DESCRIBE_QUESTION)]), ("assistant", [text(caption)])]
            if index % 2
            else [("user", [text(caption)]), ("assistant", [image])]
            for index, caption in enumerate(captions["text"])
        ]
        conversations += [
            [("user", [image, text(question)]), ("assistant", [text(answer)])]
            for question, answer in zip(questions["question"], questions["answer"], strict=True)
        ]
        codes = self._encode([*captions["image"], *questions["image"]]).tolist()
        return [
            {
                "messages": [{"role": role, "content": content} for role, content in turns],
                "image_codes": [image],
            }
            for turns, image in zip(conversations, codes, strict=True)
        ]

    @torch.no_grad()
    def _loss(self, model, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from ..llm_data import IGNORE_INDEX, SeedLlamaPaddingCollator, SeedLlamaSequenceBuilder
        from ..llm_training import resolve_chat_template

        tokenizer = self.processor.tokenizer
        builder = SeedLlamaSequenceBuilder(
            tokenizer,
            model.image_token_layout,
            seed=self.seed,
            chat_template=resolve_chat_template(self.recipe.llm.sft.chat_template),
        )
        sequences = [builder(example, index) for index, example in enumerate(examples)]
        collate = SeedLlamaPaddingCollator(tokenizer.pad_token_id)
        total, tokens = 0.0, 0
        for start in range(0, len(sequences), self.batch_size):
            batch = collate(sequences[start : start + self.batch_size])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            total += float(
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(),
                    labels.flatten(),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
            )
            tokens += int((labels != IGNORE_INDEX).sum())
        return {"loss": total / tokens, "tokens": tokens, "sequences": len(sequences)}


# ------------------------------------------------------------------------------------------------- report
class _Column(NamedTuple):
    """A column of the results table: its label and `cell(measure result) -> (value, count text)`."""

    label: str
    cell: Callable[[dict[str, Any]], tuple[float, str]]
    rate: bool = True  # a value in [0, 1], drawn in the chart


def _rate_cell(result: dict[str, Any]) -> tuple[float, str]:
    return result["rate"], f"{result['count']}/{result['total']}"


def _fraction_cell(key: str) -> Callable[[dict[str, Any]], tuple[float, str]]:
    return lambda result: (result[key], f"{round(result[key] * result['count'])}/{result['count']}")


def _agreement_cell(result: dict[str, Any]) -> tuple[float, str]:
    return result["agreement"], f"{result['positions']} positions"


def _loss_cell(key: str) -> Callable[[dict[str, Any]], tuple[float, str]]:
    return lambda result: (result[key]["loss"], f"{result[key]['tokens']} tokens")


COLUMNS: dict[str, tuple[_Column, ...]] = {
    "complete_images": (_Column("complete images, constraints off", _rate_cell),),
    "codes_unconstrained": (
        _Column("exact codes, constraints off", _rate_cell),
        _Column("code agreement, constraints off", _agreement_cell),
    ),
    "codes_constrained": (
        _Column("exact codes, constraints on", _rate_cell),
        _Column("code agreement, constraints on", _agreement_cell),
    ),
    "text_to_image": (_Column("text-to-image all attributes (pixels)", _fraction_cell("all")),),
    "caption": (_Column("caption all attributes", _fraction_cell("all")),),
    "vqa": (_Column("VQA accuracy", _fraction_cell("accuracy")),),
    "held_out_loss": (
        _Column(
            "held-out caption loss after pre-training", _loss_cell("captions_after_pretraining"), rate=False
        ),
        _Column("held-out chat loss after SFT", _loss_cell("chat_after_sft"), rate=False),
    ),
}


def results_table(results: dict[str, Any]) -> str:
    """`results.md`: the table of measures per arm (value and count), then the settings that made it."""
    measures = [
        name
        for name in MEASURES
        if name in results["skipped"] or name in next(iter(results["arms"].values()))["measures"]
    ]
    columns = [(name, column) for name in measures for column in COLUMNS[name]]
    lines = [
        f"# SEED-Shapes ablation: {results['ablation']}",
        "",
        "| arm | " + " | ".join(column.label for _, column in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for arm, values in results["arms"].items():
        cells = []
        for name, column in columns:
            if name in results["skipped"]:
                cells.append("skipped")
                continue
            value, count = column.cell(values["measures"][name])
            cells.append(f"{value:.3f} ({count})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", f"Held-out `test_seen` samples per measure: {results['num_samples']}."]
    lines += [f"Skipped: {COLUMNS[name][0].label}: {reason}." for name, reason in results["skipped"].items()]
    lines += ["", "Arms:", ""]
    for arm, values in results["arms"].items():
        minutes = sum(values["stage_times"].values()) / 60
        overrides = " ".join(f"`{item}`" for item in values["overrides"]) or "none"
        lines.append(
            f"- `{arm}`: {values['description']}; overrides {overrides}; {minutes:.1f} min of stages"
        )
    shared = results["shared_stages"]
    lines += [
        "",
        f"Shared stages, trained once in `{shared['trained_in']}` and hard-linked into the other arm: "
        + ", ".join(shared["stages"]),
        f"Schedule: `{results['schedule']}`",
        f"Command: `{results['command']}`" if results["command"] else "Command: (called from Python)",
    ]
    return "\n".join(lines) + "\n"


def results_chart(results: dict[str, Any]) -> Image.Image:
    """`results.png`: a bar per arm for every rate of the table (losses are in the table only)."""
    groups = [
        (column.label, [column.cell(values["measures"][name])[0] for values in results["arms"].values()])
        for name in MEASURES
        if name in next(iter(results["arms"].values()))["measures"]
        for column in COLUMNS[name]
        if column.rate
    ]
    return bar_chart(
        f"SEED-Shapes ablation: {results['ablation']} (test_seen)", list(results["arms"]), groups
    )


def write_report(results: dict[str, Any], output_dir: Path) -> None:
    """Write `results.json`, `results.md` and `results.png` into `output_dir`."""
    for name, write in (
        (RESULTS_FILE, lambda path: path.write_text(json.dumps(results, indent=2) + "\n")),
        ("results.md", lambda path: path.write_text(results_table(results))),
        ("results.png", lambda path: results_chart(results).save(path, format="PNG")),
    ):
        write_file_atomically(output_dir / name, write)


__all__ = [
    "COLUMNS",
    "MEASURES",
    "RESULTS_FILE",
    "ArmMeasures",
    "results_chart",
    "results_table",
    "write_report",
]
