"""Model cards of a SEED-Shapes checkpoint, written from its measured metrics (`seed-hf evaluate-shapes
--write-model-cards`): the top folder's card (the whole system, with every figure) and one per sub-model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import shapes

TRAINING_TIMES_FILE = "training_stage_times.json"
_SPLIT_TITLES = {"test_seen": "seen combinations (held-out texts)", "test_unseen": "unseen combinations"}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [
        ("text-to-image: all attributes", lambda m: m["text_to_image"]["all"]),
        *(
            (f"text-to-image: {name}", lambda m, name=name: m["text_to_image"][name])
            for name in shapes.ATTRIBUTE_NAMES
        ),
        ("caption: attributes named right (mean)", lambda m: m["caption"]["mean"]),
        ("caption: all attributes right", lambda m: m["caption"]["all"]),
        ("VQA accuracy", lambda m: m["vqa"]["accuracy"]),
        ("edit: target shown (all attributes)", lambda m: m["edit"]["all"]),
        ("reconstruction: all attributes kept", lambda m: m["reconstruction"]["all"]),
        ("retrieval R@1 (caption -> image)", lambda m: (m["retrieval"] or {}).get("r@1")),
        ("retrieval R@5", lambda m: (m["retrieval"] or {}).get("r@5")),
        ("valid images, constrained decoding", lambda m: m["valid_images"]["constrained"]),
        ("valid images, no constraints", lambda m: m["valid_images"]["unconstrained"]),
        ("tokenizer codes equal in bf16 and fp32", lambda m: m["tokenizer_bf16_code_agreement"]["agreement"]),
    ]
    splits = [split for split in _SPLIT_TITLES if split in metrics]
    lines = [
        "| metric | " + " | ".join(_SPLIT_TITLES[split] for split in splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for title, value in rows:
        lines.append(f"| {title} | " + " | ".join(_percent(value(metrics[split])) for split in splits) + " |")
    return "\n".join(lines)


def _training_table(stage_times: dict[str, float] | None) -> str:
    if not stage_times:
        return "Stage times were not recorded."
    lines = ["| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in stage_times.items()]
    total = sum(stage_times.values())
    lines.append(f"| sum | {total:.0f} ({total / 60:.1f} min) |")
    from .shapes_training import longest_stage_chain  # here: shapes_training imports this module

    chain, seconds = longest_stage_chain(stage_times)
    lines.append(
        f"| **wall time, two processes** (longest chain: {' -> '.join(chain)}) | **{seconds:.0f} ({seconds / 60:.1f} min)** |"
    )
    return "\n".join(lines)


def system_card(metrics: dict[str, Any], stage_times: dict[str, float] | None, repo_id: str) -> str:
    settings = metrics["settings"]
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: text-to-image
tags:
- seed
- seed-llama
- seed-hf
- synthetic-data
---

# SEED-Shapes

A complete, small SEED / SEED-LLaMA system trained from scratch by seed-hf's own training code on the
SEED-Shapes world (`seed_hf.training.shapes`): 64x64 images of one filled shape (circle, square, triangle; small
or large; six colours; 3x3 positions) on a white, black or gray background. 10% of the 972 attribute combinations
were kept out of training entirely ("unseen"). It reads and draws images with next-token prediction, like the
released SEED-LLaMA, at a size that trains on a 2-core CPU.

Parts (each loads with `from_pretrained`):

- this folder: `SeedLlamaForCausalLM` (a 4-layer LLaMA with the 512 image codes in its vocabulary) and its
  `SeedLlamaProcessor`;
- `visual_tokenizer/`: `SeedTokenizerModel`, image -> 32 causal codes (a 64 px ViT, causal Q-Former, 512-code
  codebook);
- `detokenizer/`: `SeedUnCLIPPipeline`, codes -> image (unCLIP UNet conditioned on the tokenizer's generation
  embedding, a tiny `AutoencoderKL`);
- `image_text_model/`: the tokenizer's stage-1 model with its text side, used only to measure retrieval;
- `example.png`: an image of the world for the demo.

## Use

```python
import seed_hf  # registers the SEED model types and pipeline tasks
from transformers import pipeline

draw = pipeline("seed-text-to-image", model="{repo_id}")
out = draw("a large red circle in the center on a white background", seed=0,
           num_inference_steps={settings["num_inference_steps"]}, decoder_guidance_scale={settings["decoder_guidance_scale"]})
out["images"][0].save("circle.png")

read = pipeline("seed-image-to-text", model="{repo_id}")
read("example.png")                                           # caption
read("example.png", question="What color is the square?")   # VQA
# edit: a conversation with the image and an instruction
draw([{{"role": "user", "content": [{{"type": "image", "image": "example.png"}}, {{"type": "text", "text": "make it blue"}}]}}])
```

The de-tokenizer works best at guidance {settings["decoder_guidance_scale"]} (the release default of 10
over-saturates this small decoder).

## Evaluation

`seed-hf evaluate-shapes --model {repo_id} --output-dir eval` ({settings["num_samples"]} held-out samples per split
and task, seed {settings["seed"]}, LLM sampling with the release defaults). Drawn images are judged by a pixel
attribute reader independent of the models (`seed_hf.training.shapes_reader`). Retrieval ranks the
{metrics["test_seen"]["retrieval"]["gallery"] if metrics["test_seen"].get("retrieval") else "split's"} seen
(or {metrics["test_unseen"]["retrieval"]["gallery"] if metrics["test_unseen"].get("retrieval") else "the"} unseen)
images for each held-out caption.

{_metrics_table(metrics)}

## Training

`seed-hf train-shapes --output-dir run --jobs 2` (recipe `training/recipes/shapes_full.yaml`): CLIP teacher,
VAE; SEED tokenizer stage 1 (causal Q-Former, image-text contrastive) -> stage 2 (codebook, reconstruction of the
causal embeddings and regression of the teacher's image embedding); unCLIP decoder trained on the tokenizer's
generation embeddings; image tokenization -> SEED-LLaMA LoRA -> merge -> full fine-tuning -> SFT (captions, VQA,
edits, dialogues). Every stage ran with the HF `Trainer` on CPU. Wall times on a 2-core machine, one thread per
process, two processes side by side (the sum is more than the run's wall time):

{_training_table(stage_times)}

## Limitations

A toy: it knows nothing outside the SEED-Shapes world. Its vocabulary is a BPE learned on the world's texts.
"""


def component_card(kind: str, metrics: dict[str, Any]) -> str:
    seen = metrics["test_seen"]
    if kind == "visual_tokenizer":
        body = (
            "`SeedTokenizerModel` of SEED-Shapes: image -> 32 causal codes from a 512-code codebook, and codes ->\n"
            "generation embedding for the de-tokenizer. Trained in two stages by `seed-hf train-shapes`.\n\n"
            f"- reconstruction (image -> codes -> de-tokenizer -> image) keeps all attributes in "
            f"{_percent(seen['reconstruction']['all'])} of held-out seen images, "
            f"{_percent(metrics['test_unseen']['reconstruction']['all'])} of unseen ones;\n"
            f"- codes equal in bf16 and fp32: {_percent(seen['tokenizer_bf16_code_agreement']['agreement'])} (seen), "
            f"{_percent(metrics['test_unseen']['tokenizer_bf16_code_agreement']['agreement'])} (unseen) of positions.\n"
        )
        tag = "image-feature-extraction"
    else:
        body = (
            "`SeedUnCLIPPipeline` of SEED-Shapes: a diffusers `UNet2DConditionModel` conditioned, as unCLIP, on an\n"
            "image embedding through its projection class embedding, with a tiny `AutoencoderKL`. Load with\n"
            "`SeedUnCLIPPipeline.from_pretrained(folder, seed_tokenizer=SeedTokenizerModel.from_pretrained(...))`.\n\n"
            f"- reconstruction keeps all attributes in {_percent(seen['reconstruction']['all'])} of held-out seen "
            f"images (guidance {metrics['settings']['decoder_guidance_scale']}, "
            f"{metrics['settings']['num_inference_steps']} DPM-Solver++ steps).\n"
        )
        tag = "image-to-image"
    return f"""---
license: apache-2.0
pipeline_tag: {tag}
tags:
- seed
- seed-hf
---

# SEED-Shapes {kind.replace("_", " ")}

Part of the SEED-Shapes checkpoint (see the card one folder up for the whole system and every figure).

{body}"""


def write_model_cards(
    model_dir: str | os.PathLike, metrics: dict[str, Any], repo_id: str = "models/seed-shapes"
) -> list[Path]:
    """Write `README.md` cards into `model_dir` (the system) and its `visual_tokenizer/` and `detokenizer/`, and
    the metrics as `eval_metrics.json`; the training times come from the folder's `training_stage_times.json`."""
    model_dir = Path(model_dir)
    times_path = model_dir / TRAINING_TIMES_FILE
    stage_times = json.loads(times_path.read_text()) if times_path.is_file() else None
    written = []
    cards = {
        model_dir: system_card(metrics, stage_times, repo_id),
        model_dir / "visual_tokenizer": component_card("visual_tokenizer", metrics),
        model_dir / "detokenizer": component_card("detokenizer", metrics),
    }
    for folder, text in cards.items():
        path = folder / "README.md"
        temporary = folder / f".README.md.tmp{os.getpid()}"
        temporary.write_text(text)
        os.replace(temporary, path)
        written.append(path)
    metrics_path = model_dir / "eval_metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return [*written, metrics_path]


__all__ = ["TRAINING_TIMES_FILE", "write_model_cards"]
