"""The README's main job: run the shipped SEED-Shapes model and write demo outputs to ``outputs/``.

Text-to-image for a few prompts, a caption and a VQA answer for the shipped example image, an edit of it and a
two-turn dialogue (draw, then change the drawing). Every drawn image is saved as a PNG and read back by the
pixel attribute reader, so the report says whether each image shows what was asked.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# the shipped model in a source checkout (an editable install); elsewhere pass --model or set SEED_HF_MODEL
SOURCE_TREE_MODEL = Path(__file__).resolve().parents[1] / "models" / "seed-shapes"
MODEL_ENVIRONMENT_VARIABLE = "SEED_HF_MODEL"
# (request, the attributes the drawing should show: background, shape, size, color, x, y)
PROMPTS = (
    (
        "a large red circle in the center on a white background",
        ("white", "circle", "large", "red", "center", "middle"),
    ),
    (
        "a small blue square at the top left, gray background",
        ("gray", "square", "small", "blue", "left", "top"),
    ),
    (
        "a big yellow triangle at the bottom right on a gray background",
        ("gray", "triangle", "large", "yellow", "right", "bottom"),
    ),
)
EXAMPLE_QUESTION = (
    "What color is the square?"  # the example image holds a large green square (middle left, on black)
)
EDIT = ("make it orange", {"color": "orange"})  # the instruction and what it changes in the example
DIALOGUE = (
    (
        "draw a small purple circle at the top right on a white background",
        ("white", "circle", "small", "purple", "right", "top"),
    ),
    ("now move it to the left", ("white", "circle", "small", "purple", "left", "top")),
)


def _judged(image, expected) -> dict:
    """What the pixel attribute reader sees in `image`, and whether it is what was asked."""
    from seed_hf.training.shapes import ATTRIBUTE_NAMES, ShapeAttributes
    from seed_hf.training.shapes.reader import read_attributes

    reading = read_attributes(image)
    read = {name: reading[name] for name in ATTRIBUTE_NAMES}
    expected = (
        expected.to_dict()
        if isinstance(expected, ShapeAttributes)
        else dict(zip(ATTRIBUTE_NAMES, expected, strict=True))
    )
    return {"read": read, "expected": expected, "matches": read == expected}


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """
    The checkpoint folder to run: `model` (a folder, or a Hub repo id fetched into the cache, offline from a warm
    one), else `$SEED_HF_MODEL`, else the shipped `models/seed-shapes` of a source checkout.
    """
    model = model or os.environ.get(MODEL_ENVIRONMENT_VARIABLE)
    if model is None:
        if not SOURCE_TREE_MODEL.is_dir():
            raise ValueError(
                "no model given: pass --model (a SEED checkpoint folder or Hub repo id) or set "
                f"{MODEL_ENVIRONMENT_VARIABLE}; the shipped models/seed-shapes is only found in a source checkout"
            )
        return SOURCE_TREE_MODEL
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(model)))


def run(model_dir: str | os.PathLike, output_dir: str | os.PathLike, seed: int = 0) -> dict:
    """Run the demo on `model_dir`, writing PNGs, `report.json` and `report.md` into `output_dir`."""
    from PIL import Image

    from seed_hf.training.shapes.evaluate import load_shapes_pipelines
    from seed_hf.training.shapes.run import EXAMPLE_ATTRIBUTES, EXAMPLE_IMAGE_FILE

    start = time.perf_counter()
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(
            f"`model_dir` must be a SEED checkpoint folder (config.json), got {str(model_dir)!r}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    text_to_image, image_to_text = load_shapes_pipelines(model_dir)
    # plain calls: the checkpoint's own recommended settings (generation_config.json, the de-tokenizer's defaults)
    draw_settings = read_settings = {"seed": seed}
    report: dict = {"model": str(model_dir), "seed": seed}

    report["text_to_image"] = []
    prompts = [prompt for prompt, _ in PROMPTS]
    outputs = text_to_image(prompts, batch_size=len(prompts), **draw_settings)
    for number, ((prompt, expected), output) in enumerate(zip(PROMPTS, outputs, strict=True), start=1):
        path = output_dir / f"text_to_image_{number}.png"
        output["images"][0].save(path)
        report["text_to_image"].append(
            {"prompt": prompt, "image": path.name, **_judged(output["images"][0], expected)}
        )

    example = Image.open(model_dir / EXAMPLE_IMAGE_FILE).convert("RGB")
    example.save(output_dir / "example.png")
    caption, answer = image_to_text(
        [{"image": example}, {"image": example, "question": EXAMPLE_QUESTION}], batch_size=2, **read_settings
    )
    report["caption"] = {"image": "example.png", "caption": caption[0]["generated_text"]}
    report["vqa"] = {
        "image": "example.png",
        "question": EXAMPLE_QUESTION,
        "answer": answer[0]["generated_text"],
    }

    instruction, changes = EDIT
    expected = EXAMPLE_ATTRIBUTES.replace(**changes)
    edited = text_to_image(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": example}, {"type": "text", "text": instruction}],
            }
        ],
        **draw_settings,
    )
    edited["images"][0].save(output_dir / "edit.png")
    report["edit"] = {
        "image": "example.png",
        "instruction": instruction,
        "output": "edit.png",
        **_judged(edited["images"][0], expected),
    }

    # two turns: the second request sees the first drawing by its codes, as the model wrote it
    conversation: list[dict] = []
    report["dialogue"] = []
    for number, (message, expected) in enumerate(DIALOGUE, start=1):
        conversation.append({"role": "user", "content": message})
        output = text_to_image(conversation, **draw_settings)
        conversation.append(
            {"role": "assistant", "content": [{"type": "image", "codes": output["image_codes"][0]}]}
        )
        path = output_dir / f"dialogue_turn_{number}.png"
        output["images"][0].save(path)
        report["dialogue"].append(
            {"user": message, "image": path.name, **_judged(output["images"][0], expected)}
        )

    drawings = [*report["text_to_image"], report["edit"], *report["dialogue"]]
    report["drawings_as_asked"] = f"{sum(entry['matches'] for entry in drawings)}/{len(drawings)}"
    report["wall_time_s"] = round(time.perf_counter() - start, 1)
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "report.md").write_text(_markdown(report))
    return report


def _markdown(report: dict) -> str:
    def read(entry: dict) -> str:
        values = entry["read"]
        if values["shape"] is None:
            return "unreadable"
        seen = f"{values['size']} {values['color']} {values['shape']}, {values['y']} {values['x']}, {values['background']}"
        return f"{seen} ({'as asked' if entry['matches'] else 'NOT as asked'})"

    lines = [
        f"# SEED-Shapes demo ({report['model']})",
        "",
        "| task | input | output | read from the pixels |",
        "|---|---|---|---|",
        *(
            f"| text-to-image | {entry['prompt']} | {entry['image']} | {read(entry)} |"
            for entry in report["text_to_image"]
        ),
        f"| caption | example.png | {report['caption']['caption']} | |",
        f"| VQA | example.png: {report['vqa']['question']} | {report['vqa']['answer']} | |",
        f"| edit | example.png: {report['edit']['instruction']} | edit.png | {read(report['edit'])} |",
        *(
            f"| dialogue | {entry['user']} | {entry['image']} | {read(entry)} |"
            for entry in report["dialogue"]
        ),
        "",
        f"Drawings as asked: {report['drawings_as_asked']}. Wall time: {report['wall_time_s']} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed-hf main", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help=f"a SEED checkpoint folder or Hub repo id (default: ${MODEL_ENVIRONMENT_VARIABLE}, else the shipped "
        "models/seed-shapes of a source checkout)",
    )
    parser.add_argument("--output-dir", default="outputs", help="where PNGs and the report are written")
    parser.add_argument("--seed", type=int, default=0, help="seed of every drawing and answer")
    args = parser.parse_args(argv)
    try:
        model = resolve_model(args.model)
    except (ValueError, OSError) as error:
        parser.exit(2, f"seed-hf main: error: {error}\n")
    report = run(model, args.output_dir, args.seed)
    print((Path(args.output_dir) / "report.md").read_text())
    print(f"wrote {args.output_dir}/report.json, report.md and PNGs in {report['wall_time_s']} s")
    return 0
