"""How many sampled images are well formed, with and without SEED-LLaMA's image constraints.

A random tiny SEED-LLaMA (the test fixtures' layout: 64 codes, 32 codes per image) samples `--count` answers to a
text prompt at a high temperature. With constraints, `force_image=True` makes each answer start with an image;
without, the prompt ends with `<img>` so that the model is in the same place. Every answer is parsed; an image is
complete when it is `<img>` + exactly 32 codes + `</img>`; broken ones are truncated (fewer codes), overlong, or
image tokens outside an image.

Usage: python benchmarks/constrained_decoding_validity.py [--count 1000] [--temperature 2.0] [--max-new-tokens 80]
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seed_llama_fixtures import build_tiny_seed_llama, build_tiny_tokenizer  # noqa: E402

from seed_hf.modeling.generation_seed_llama import ImageSegment, parse_generation  # noqa: E402


def classify(segment: ImageSegment) -> str:
    if not segment.opened:
        return "stray"
    if segment.complete:
        return "complete"
    if segment.truncated:
        return "truncated"
    return "overlong" if segment.num_codes > segment.tokens_per_image else "unclosed"


def sample(model, prompt_ids, count, batch_size, constrain, **kwargs) -> Counter:
    tally = Counter()
    layout = model.image_token_layout
    for start in range(0, count, batch_size):
        batch = prompt_ids.expand(min(batch_size, count - start), -1)
        out = model.generate(
            batch, do_sample=True, constrain_images=constrain, force_image=constrain, **kwargs
        )
        for row in out[:, batch.shape[1] :]:
            # an unconstrained row continues the prompt's <img>: parse it with that token in front
            row = row if constrain else torch.cat([row.new_tensor([layout.boi_token_id]), row])
            kinds = [classify(s) for s in parse_generation(row, layout) if isinstance(s, ImageSegment)]
            tally.update(kinds)
            tally["answers"] += 1
            tally["answers with only complete images"] += all(kind == "complete" for kind in kinds)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = build_tiny_tokenizer()
    model = build_tiny_seed_llama(tokenizer, seed=args.seed)
    kwargs = dict(temperature=args.temperature, max_new_tokens=args.max_new_tokens, top_k=0)
    prompt = "Draw a picture of a mountain at sunset."
    for constrain in (True, False):
        torch.manual_seed(args.seed)
        text = prompt if constrain else prompt + "<img>"
        prompt_ids = tokenizer([text], return_tensors="pt").input_ids
        tally = sample(model, prompt_ids, args.count, args.batch_size, constrain, **kwargs)
        opened = sum(tally[k] for k in ("complete", "truncated", "overlong", "unclosed"))
        print(
            f"constraints {'on ' if constrain else 'off'}: {tally['answers']} answers "
            f"({tally['answers with only complete images']} with only complete images); images opened: {opened}, "
            f"complete: {tally['complete']}, broken: {opened - tally['complete']} (truncated {tally['truncated']}, "
            f"overlong {tally['overlong']}, unclosed {tally['unclosed']}); runs of image tokens outside an "
            f"image: {tally['stray']}"
        )


if __name__ == "__main__":
    main()
