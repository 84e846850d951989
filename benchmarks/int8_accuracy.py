"""SEED-Shapes accuracy of int8 weight-only SEED-LLaMA and visual tokenizer against bf16.

Both the LLM and the visual tokenizer are loaded with `quantization_config=TorchAoConfig(Int8WeightOnlyConfig())`
(torchao; embeddings, codebook and LM head stay bf16); the de-tokenizer is bf16 on both sides. Figures, on
held-out samples of one split:

- `text_to_image`: attribute accuracy of the images drawn for held-out captions (`seed-text-to-image`, the protocol
  of `seed-hf evaluate-shapes`: release sampling, seed, batch size, de-tokenizer settings), bf16 and int8;
- `code_agreement`: fraction of code positions the int8 visual tokenizer gives identically to the bf16 one on the
  split's images.

    python benchmarks/int8_accuracy.py [--model models/seed-shapes] [--num-samples 100] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]


def load_text_to_image(model_dir: str, quantization_config=None):
    """`seed-text-to-image` on `model_dir` in bf16; with `quantization_config`, the LLM and the visual tokenizer are
    loaded quantized (the pipeline's de-tokenizer takes the LLM's visual tokenizer)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoProcessor, pipeline

    import seed_hf  # noqa: F401  (registers the classes and tasks)

    quantized = {} if quantization_config is None else {"quantization_config": quantization_config}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, **quantized).eval()
    visual_tokenizer = AutoModel.from_pretrained(
        model.resolve_component(model.config.visual_tokenizer_name_or_path), dtype=torch.bfloat16, **quantized
    )
    model.set_visual_tokenizer(visual_tokenizer.eval())
    return pipeline("seed-text-to-image", model=model, processor=AutoProcessor.from_pretrained(model_dir))


@torch.no_grad()
def code_agreement(bf16_pipeline, int8_pipeline, images) -> dict:
    """Fraction of code positions on which the two pipelines' visual tokenizers agree."""
    pixel_values = bf16_pipeline.processor.image_processor(images, return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(torch.bfloat16)
    codes = bf16_pipeline.model.visual_tokenizer.encode(pixel_values)
    int8_codes = int8_pipeline.model.visual_tokenizer.encode(pixel_values)
    return {"agreement": float((codes == int8_codes).float().mean()), "positions": int(codes.numel())}


def main() -> None:
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    from seed_hf.training.shapes import caption_dataset
    from seed_hf.training.shapes.evaluate import ShapesEvaluator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPOSITORY / "models" / "seed-shapes"))
    parser.add_argument("--split", default="test_seen", choices=["test_seen", "test_unseen"])
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--output", help="also write the figures to this JSON file")
    args = parser.parse_args()
    pipelines = {
        "bf16": load_text_to_image(args.model),
        "int8": load_text_to_image(args.model, TorchAoConfig(Int8WeightOnlyConfig())),
    }
    # the evaluator brings the protocol of `seed-hf evaluate-shapes`; it draws with whichever pipeline it holds
    evaluator = ShapesEvaluator(
        args.model, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size
    )
    result = {"model": args.model, "split": args.split, "num_samples": args.num_samples, "seed": args.seed}
    for name, drawer in pipelines.items():
        evaluator.text_to_image = drawer
        result[f"text_to_image_{name}"], _ = evaluator.evaluate_text_to_image(args.split)
        print(f"text-to-image, {name}: {json.dumps(result[f'text_to_image_{name}'])}", flush=True)
    images = list(caption_dataset(args.split, args.num_samples, seed=args.seed)["image"])
    result["code_agreement"] = code_agreement(pipelines["bf16"], pipelines["int8"], images)
    print(f"visual tokenizer codes, int8 == bf16: {json.dumps(result['code_agreement'])}")
    difference = result["text_to_image_bf16"]["all"] - result["text_to_image_int8"]["all"]
    print(
        f"all-attribute accuracy: bf16 {result['text_to_image_bf16']['all']:.2f}, int8 "
        f"{result['text_to_image_int8']['all']:.2f} ({100 * difference:+.0f} points bf16 - int8)"
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
