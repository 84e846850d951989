"""The one builder of seed-hf's model cards.

Every folder of a SEED system gets a `README.md` rendered from a Jinja template of this package with
`huggingface_hub.ModelCard.from_template`, its Hub metadata given as a `ModelCardData`:

- [`write_shapes_cards`]: the SEED-Shapes checkpoint trained by `seed-hf train-shapes`, with a `model-index` of
  the figures `seed-hf evaluate-shapes` measured;
- [`write_converted_cards`]: a system converted from the official release, with its provenance and parity
  evidence and `base_model` set to the official repositories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from seed_hf.io_utils import write_file_atomically, write_text_atomically

TEMPLATE_DIR = Path(__file__).resolve().parent
CARD_FILE = "README.md"
# the sub-folders of a SEED system (`seed_hf.checkpoint.save_seed_checkpoint`)
VISUAL_TOKENIZER_FOLDER = "visual_tokenizer"
DETOKENIZER_FOLDER = "detokenizer"
# SEED-Shapes only: the tokenizer's stage-1 image-text model (retrieval) and the demo image
IMAGE_TEXT_MODEL_FOLDER = "image_text_model"
EXAMPLE_IMAGE_FILE = "example.png"
# the SEED-Shapes card's figure: per-attribute accuracy of these tasks, seen vs unseen combinations
ATTRIBUTE_CHART_FILE = "attribute_accuracy.png"
ATTRIBUTE_CHART_TASKS = {
    "text_to_image": "text-to-image (drawings)",
    "reconstruction": "reconstruction (image -> codes -> image)",
    "caption": "caption",
    "vqa": "VQA (by question type)",
    "edit": "edit (drawings)",
}

BASE_TAGS = ("seed", "seed-llama", "seed-hf")
SHAPES_LICENSE = "apache-2.0"
# the licences of the official repositories: AILab-CVC's SEED weights are under the Llama 2 licence, the unCLIP
# de-tokenizer under Stability AI's CreativeML Open RAIL++-M licence
OFFICIAL_LLM_LICENSE = "llama2"
OFFICIAL_TOKENIZER_LICENSE = "llama2"
OFFICIAL_UNCLIP_LICENSE = "openrail++"

# Hub pipeline tags. The de-tokenizer turns an image's SEED codes (or embedding) into an image: an image
# variation pipeline like the unCLIP one it comes from, which the Hub files under image-to-image.
SYSTEM_PIPELINE_TAG = "any-to-any"
VISUAL_TOKENIZER_PIPELINE_TAG = "image-feature-extraction"
DETOKENIZER_PIPELINE_TAG = "image-to-image"

SHAPES_SPLITS = {"test_seen": "seen combinations (held-out texts)", "test_unseen": "unseen combinations"}
SHAPES_DATASET_TYPE = "seed-shapes"


@dataclass(frozen=True)
class ShapesMetric:
    """One measured figure of `seed-hf evaluate-shapes`: a row of the cards' table and one `EvalResult` per split.

    `task` is the key of the split's metrics (also the `dataset_config` of the result: each task is measured
    on its own held-out records) and `key` the figure's key in it.
    """

    title: str
    task: str
    key: str
    task_type: str
    task_name: str
    metric_type: str
    metric_name: str

    def value(self, split_metrics: Mapping[str, Any]) -> float | None:
        task = split_metrics.get(self.task)
        return None if not task else task.get(self.key)


def _shapes_metrics() -> list[ShapesMetric]:
    from seed_hf.training.shapes import ATTRIBUTE_NAMES

    text_to_image = ("text_to_image", "text-to-image", "Text-to-image")
    edit = ("edit", "image-to-image", "Instruction-based editing")
    reconstruction = ("reconstruction", "image-to-image", "Reconstruction (image -> codes -> image)")
    retrieval = ("retrieval", "image-feature-extraction", "Caption-to-image retrieval (causal embeddings)")
    valid = ("valid_images", "text-to-image", "Valid images (32 codes between <img> and </img>)")
    bf16 = ("tokenizer_bf16_code_agreement", "image-feature-extraction", "Tokenizer codes in bf16 vs fp32")
    clip_qa = ("clip_qa", "video-text-to-text", "Question answering on clips (frames as images)")
    composition = ("composition", "image-to-image", "Composition of two images")
    in_context_edit = ("in_context_edit", "image-to-image", "In-context edits (two example pairs)")

    def metric(title, task, key, metric_type, metric_name):
        return ShapesMetric(title, task[0], key, task[1], task[2], metric_type, metric_name)

    return [
        metric("text-to-image: all attributes", text_to_image, "all", "accuracy", "all attributes right"),
        *(
            metric(f"text-to-image: {name}", text_to_image, name, "accuracy", f"{name} right")
            for name in ATTRIBUTE_NAMES
        ),
        metric(
            "caption: attributes named right (mean)",
            ("caption", "image-to-text", "Captioning"),
            "mean",
            "accuracy",
            "attributes named right (mean)",
        ),
        metric(
            "caption: all attributes right",
            ("caption", "image-to-text", "Captioning"),
            "all",
            "accuracy",
            "all attributes right",
        ),
        metric(
            "VQA accuracy",
            ("vqa", "visual-question-answering", "Visual question answering"),
            "accuracy",
            "accuracy",
            "accuracy",
        ),
        metric(
            "edit: target shown (all attributes)", edit, "all", "accuracy", "target shown (all attributes)"
        ),
        metric("clip QA accuracy", clip_qa, "accuracy", "accuracy", "accuracy"),
        metric(
            "composition: target shown (all attributes)",
            composition,
            "all",
            "accuracy",
            "target shown (all attributes)",
        ),
        metric(
            "in-context edit: target shown (all attributes)",
            in_context_edit,
            "all",
            "accuracy",
            "target shown (all attributes)",
        ),
        metric(
            "reconstruction: all attributes kept", reconstruction, "all", "accuracy", "all attributes kept"
        ),
        metric("retrieval R@1 (caption -> image)", retrieval, "r@1", "recall@1", "R@1 (caption -> image)"),
        metric("retrieval R@5", retrieval, "r@5", "recall@5", "R@5 (caption -> image)"),
        metric(
            "valid images, constrained decoding", valid, "constrained", "valid_rate", "constrained decoding"
        ),
        metric("valid images, no constraints", valid, "unconstrained", "valid_rate", "no constraints"),
        metric("tokenizer codes equal in bf16 and fp32", bf16, "agreement", "agreement", "codes equal"),
    ]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def shapes_eval_results(metrics: Mapping[str, Any], tasks: set[str] | None = None) -> list[EvalResult]:
    """The `EvalResult`s of a SEED-Shapes evaluation (`eval_metrics.json`), for every split and figure measured
    (of the given `tasks` only, if given). Values are fractions, rounded to 4 decimals."""
    results = []
    for split, title in SHAPES_SPLITS.items():
        if split not in metrics:
            continue
        for spec in _shapes_metrics():
            value = spec.value(metrics[split])
            if value is None or (tasks is not None and spec.task not in tasks):
                continue
            results.append(
                EvalResult(
                    task_type=spec.task_type,
                    task_name=spec.task_name,
                    dataset_type=SHAPES_DATASET_TYPE,
                    dataset_name=f"SEED-Shapes, {title}",
                    dataset_config=spec.task,
                    dataset_split=split,
                    metric_type=spec.metric_type,
                    metric_name=spec.metric_name,
                    metric_value=round(float(value), 4),
                )
            )
    return results


def _shapes_table(metrics: Mapping[str, Any]) -> dict[str, Any]:
    splits = [split for split in SHAPES_SPLITS if split in metrics]
    return {
        "columns": [SHAPES_SPLITS[split] for split in splits],
        # a task missing from every split (an evaluation from before it existed) gets no row; one that could not be
        # measured (e.g. retrieval without the image-text model) is n/a
        "rows": [
            {"title": spec.title, "values": [_percent(spec.value(metrics[split])) for split in splits]}
            for spec in _shapes_metrics()
            if any(spec.task in metrics[split] for split in splits)
        ],
    }


def _stage_rows(stage_times: Mapping[str, float] | None) -> dict[str, Any] | None:
    if not stage_times:
        return None
    from seed_hf.training.shapes.train import longest_stage_chain

    chain, longest = longest_stage_chain(dict(stage_times))
    total = sum(stage_times.values())
    return {
        "stages": [{"name": stage, "seconds": f"{seconds:.0f}"} for stage, seconds in stage_times.items()],
        "sum": f"{total:.0f} ({total / 60:.1f} min)",
        "chain": " -> ".join(chain),
        "longest": f"{longest:.0f} ({longest / 60:.1f} min)",
    }


def seed_hf_version() -> str:
    try:
        return metadata.version("seed-hf")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        from seed_hf import __version__

        return __version__


def render_card(template: str, card_data: ModelCardData, **variables: Any) -> ModelCard:
    """Render the package's `template` (a file name of this folder) with `card_data` as its metadata."""
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE_DIR / template), **variables)


def write_card(folder: str | os.PathLike, card: ModelCard) -> Path:
    """Write `card` as `folder/README.md` atomically: a temporary file in the folder, renamed into place."""
    text = card.content if card.content.endswith("\n") else card.content + "\n"
    return write_text_atomically(Path(folder) / CARD_FILE, text)


def shapes_attribute_chart(metrics: Mapping[str, Any]):
    """
    The SEED-Shapes card's figure (a PIL image): for each task of `ATTRIBUTE_CHART_TASKS` that `metrics` (an
    `evaluate-shapes` result) has for both splits, the accuracy of each of the six attributes on seen and on unseen
    combinations, one panel per task.
    """
    from PIL import Image

    from seed_hf.training.shapes.charts import bar_chart
    from seed_hf.training.shapes.world import ATTRIBUTE_NAMES

    panels = []
    for task, title in ATTRIBUTE_CHART_TASKS.items():
        if not all(task in metrics.get(split, {}) for split in SHAPES_SPLITS):
            continue
        rates = {
            split: metrics[split][task].get("per_question_type", metrics[split][task])
            for split in SHAPES_SPLITS
        }
        # a small evaluation may have asked no VQA question of some attribute: those are left out
        groups = [
            (name, [rates[split][name] for split in SHAPES_SPLITS])
            for name in ATTRIBUTE_NAMES
            if all(rates[split].get(name) is not None for split in SHAPES_SPLITS)
        ]
        if not groups:
            continue
        panels.append(bar_chart(f"{title}: accuracy per attribute", ["seen", "unseen"], groups, 24, 160))
    if not panels:
        raise ValueError(f"metrics hold none of {list(ATTRIBUTE_CHART_TASKS)} for both {list(SHAPES_SPLITS)}")
    chart = Image.new(
        "RGB", (max(panel.width for panel in panels), sum(panel.height for panel in panels)), "white"
    )
    top = 0
    for panel in panels:
        chart.paste(panel, (0, top))
        top += panel.height
    return chart


def _system_parts(folder: Path, sub_folders: tuple[str, ...]) -> list[str]:
    return [name for name in sub_folders if (folder / name).is_dir()]


def _config(folder: Path) -> dict[str, Any]:
    """The folder's `config.json`, `{}` where it has none."""
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_shapes_cards(
    folder: str | os.PathLike,
    metrics: dict,
    stage_times: dict | None = None,
    repo_id: str = "seed-hf/seed-shapes",
) -> list[Path]:
    """
    Write the model cards of a SEED-Shapes checkpoint: `README.md` in `folder` (the whole system, with every figure
    and the training wall times) and in each of its `visual_tokenizer/` and `detokenizer/` that exists; and, when
    `metrics` hold both splits, the figure the card shows, `ATTRIBUTE_CHART_FILE` ([`shapes_attribute_chart`]).

    Args:
        folder: the checkpoint folder (e.g. `models/seed-shapes`).
        metrics: what `seed-hf evaluate-shapes` measured (its `metrics.json`, shipped as `eval_metrics.json`).
        stage_times: `{stage: seconds}` recorded by `seed-hf train-shapes`; by default the folder's
            `training_stage_times.json` if it has one (pass `{}` for a card without them).
        repo_id: the Hub repository the usage examples load.

    Returns:
        The paths written.
    """
    folder = Path(folder)
    if stage_times is None:
        from seed_hf.training.shapes.run import TRAINING_TIMES_FILE

        times_path = folder / TRAINING_TIMES_FILE
        stage_times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    settings = metrics["settings"]
    splits = [split for split in SHAPES_SPLITS if split in metrics]
    common = {
        "repo_id": repo_id,
        # the codebook the cards describe: its size and, for a factorised one, the slices of its position groups
        "num_image_codes": _config(folder).get("num_image_codes"),
        "code_groups": _config(folder / VISUAL_TOKENIZER_FOLDER).get("code_groups"),
        "settings": settings,
        "split_metrics": {split: metrics[split] for split in splits},
        "split_titles": SHAPES_SPLITS,
        "percent": _percent,
    }
    parts = _system_parts(folder, (VISUAL_TOKENIZER_FOLDER, DETOKENIZER_FOLDER, IMAGE_TEXT_MODEL_FOLDER))
    retrieval = {split: metrics[split]["retrieval"] for split in splits if metrics[split].get("retrieval")}
    chart = None
    if len(splits) == len(SHAPES_SPLITS) and any(
        task in metrics["test_seen"] for task in ATTRIBUTE_CHART_TASKS
    ):
        chart = write_file_atomically(
            folder / ATTRIBUTE_CHART_FILE,
            lambda temporary: shapes_attribute_chart(metrics).save(temporary, format="PNG"),
        )
    cards = {
        folder: render_card(
            "shapes_system.md",
            ModelCardData(
                model_name="SEED-Shapes",
                license=SHAPES_LICENSE,
                library_name="transformers",
                pipeline_tag=SYSTEM_PIPELINE_TAG,
                tags=[*BASE_TAGS, "seed-shapes", "synthetic-data", "text-to-image", "image-to-text"],
                eval_results=shapes_eval_results(metrics) or None,
            ),
            parts=parts,
            evaluated_model=metrics.get("model", "path/to/seed-shapes"),
            has_example=(folder / EXAMPLE_IMAGE_FILE).is_file(),
            attribute_chart=chart and chart.name,
            table=_shapes_table(metrics),
            retrieval_gallery={split: figures["gallery"] for split, figures in retrieval.items()},
            retrieval_queries=sorted({figures["queries"] for figures in retrieval.values()}),
            training=_stage_rows(stage_times),
            **common,
        )
    }
    if VISUAL_TOKENIZER_FOLDER in parts:
        cards[folder / VISUAL_TOKENIZER_FOLDER] = render_card(
            "shapes_visual_tokenizer.md",
            ModelCardData(
                model_name="SEED-Shapes visual tokenizer",
                license=SHAPES_LICENSE,
                library_name="transformers",
                pipeline_tag=VISUAL_TOKENIZER_PIPELINE_TAG,
                tags=[*BASE_TAGS, "seed-shapes", "synthetic-data", "image-tokenizer"],
                eval_results=shapes_eval_results(
                    metrics, {"reconstruction", "retrieval", "tokenizer_bf16_code_agreement"}
                )
                or None,
            ),
            **common,
        )
    if DETOKENIZER_FOLDER in parts:
        cards[folder / DETOKENIZER_FOLDER] = render_card(
            "shapes_detokenizer.md",
            ModelCardData(
                model_name="SEED-Shapes de-tokenizer",
                license=SHAPES_LICENSE,
                library_name="diffusers",
                pipeline_tag=DETOKENIZER_PIPELINE_TAG,
                tags=[*BASE_TAGS, "seed-shapes", "synthetic-data", "unclip"],
                eval_results=shapes_eval_results(metrics, {"reconstruction"}) or None,
            ),
            **common,
        )
    return [write_card(path, card) for path, card in cards.items()] + ([chart] if chart else [])


def _chat_template(llm_repo: str) -> str:
    # `seed-hf convert-llama --chat-template`: vicuna for the 8B models, llama2 for the 14B ones
    return "llama2" if "14b" in llm_repo.lower() else "vicuna"


def _convert_command(
    folder: Path, tokenizer_repo: str, llm_repo: str, unclip_repo: str, repo_id: str | None
) -> str:
    """The `seed-hf convert-release` call that makes such a folder (`seed_hf.convert_release`)."""
    arguments = [
        f"--tokenizer {tokenizer_repo}",
        f"--llm {llm_repo}",
        f"--unclip {unclip_repo}",
        f"--output-dir {folder.resolve().name}",
    ]
    if repo_id:
        arguments.append(f"--push-to-hub {repo_id}")
    return "seed-hf convert-release \\\n    " + " \\\n    ".join(arguments)


def write_converted_cards(
    folder: str | os.PathLike,
    *,
    tokenizer_repo: str,
    llm_repo: str,
    unclip_repo: str,
    parity: dict[str, str],
    repo_id: str | None = None,
) -> list[Path]:
    """
    Write the model cards of a SEED system converted from the official release: `README.md` in `folder` (the
    SEED-LLaMA converted from `llm_repo`) and in each of its `visual_tokenizer/` (converted from `tokenizer_repo`)
    and `detokenizer/` (assembled from `unclip_repo`) that exists. Each card names the official repository its part
    was converted from as `base_model`, the seed-hf version and command that converted it (`seed-hf
    convert-release`, which calls this), and the parity evidence.

    Args:
        folder: the converted system's folder.
        tokenizer_repo, llm_repo, unclip_repo: the official repositories, e.g. `AILab-CVC/seed-tokenizer-2`,
            `AILab-CVC/seed-llama-8b-sft`, `stabilityai/stable-diffusion-2-1-unclip`.
        parity: `{check: result}`, e.g. `{"tokenizer codes vs authors' code": "identical on fixture tiny-a"}`.
        repo_id: the Hub repository the usage examples load (default: a local path to the folder).

    Returns:
        The paths written.
    """
    folder = Path(folder)
    location = repo_id or f"path/to/{folder.resolve().name}"
    llm_name = llm_repo.rstrip("/").split("/")[-1]
    parts = _system_parts(folder, (VISUAL_TOKENIZER_FOLDER, DETOKENIZER_FOLDER))
    common = {
        "repo_id": location,
        "on_hub": repo_id is not None,
        "convert_command": _convert_command(folder, tokenizer_repo, llm_repo, unclip_repo, repo_id),
        "tokenizer_repo": tokenizer_repo,
        "llm_repo": llm_repo,
        "unclip_repo": unclip_repo,
        "llm_name": llm_name,
        "chat_template": _chat_template(llm_repo),
        "parity": dict(parity),
        "seed_hf_version": seed_hf_version(),
        "parts": parts,
    }
    tags = [*BASE_TAGS, "converted"]
    cards = {
        folder: render_card(
            "converted_system.md",
            ModelCardData(
                model_name=f"{llm_name} (seed-hf)",
                license=OFFICIAL_LLM_LICENSE,
                library_name="transformers",
                pipeline_tag=SYSTEM_PIPELINE_TAG,
                base_model=llm_repo,
                tags=[*tags, "text-to-image", "image-to-text"],
            ),
            **common,
        )
    }
    if VISUAL_TOKENIZER_FOLDER in parts:
        cards[folder / VISUAL_TOKENIZER_FOLDER] = render_card(
            "converted_visual_tokenizer.md",
            ModelCardData(
                model_name=f"{tokenizer_repo.rstrip('/').split('/')[-1]} (seed-hf)",
                license=OFFICIAL_TOKENIZER_LICENSE,
                library_name="transformers",
                pipeline_tag=VISUAL_TOKENIZER_PIPELINE_TAG,
                base_model=tokenizer_repo,
                tags=[*tags, "image-tokenizer"],
            ),
            **common,
        )
    if DETOKENIZER_FOLDER in parts:
        cards[folder / DETOKENIZER_FOLDER] = render_card(
            "converted_detokenizer.md",
            ModelCardData(
                model_name=f"SEED de-tokenizer from {unclip_repo.rstrip('/').split('/')[-1]} (seed-hf)",
                license=OFFICIAL_UNCLIP_LICENSE,
                library_name="diffusers",
                pipeline_tag=DETOKENIZER_PIPELINE_TAG,
                base_model=unclip_repo,
                tags=[*tags, "unclip", "stable-diffusion"],
            ),
            **common,
        )
    return [write_card(path, card) for path, card in cards.items()]


__all__ = [
    "ShapesMetric",
    "render_card",
    "seed_hf_version",
    "shapes_eval_results",
    "write_card",
    "write_converted_cards",
    "write_shapes_cards",
]
