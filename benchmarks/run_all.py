"""seed-hf's benchmark suite: every figure as a ratio against its stock baseline measured in the same run.

Each comparison runs ours and the baseline interleaved (A B A B ...), `--repeats` times each after a warm-up, and
reports the medians, their ratio and the spread (max/min of each side). Prints a Markdown table and writes
`--output` (JSON) and the same table as Markdown beside it. Random weights: the figures measure compute.

    python benchmarks/run_all.py              # full shapes (1B-shaped SEED-LLaMA, full-size SEED tokenizer)
    python benchmarks/run_all.py --quick      # small shapes, a smoke run of a few minutes

Comparisons:
- decode, text: `SeedLlamaForCausalLM.generate(constrain_images=False)` vs `LlamaForCausalLM.generate`, same weights;
- decode, image: `generate(force_image=True)` (`<img>` + codes + `</img>`, constrained: inside the image only the
  image-token rows of the LM head are computed) vs stock of the same length;
- decode, compiled: static cache + `torch.compile` vs eager, ours, text and image (first call = compile time,
  reported apart);
- encode: `SeedTokenizerModel.encode` vs transformers' BLIP-2 blocks (`Blip2VisionModel` + `Blip2QFormerModel`) of
  the same sizes, bf16;
- int8: weight-only int8 (`TorchAoConfig`) vs bf16 decode, eager text and image, and compiled image
  (`benchmarks/int8_decode.py`);
- text-to-image: one `pipeline("seed-text-to-image")` call on the shipped SEED-Shapes model with its decoder default
  vs the old one (25 DPM-Solver++ steps, `benchmarks/text_to_image_latency.py`), broken down into LLM generation,
  visual tokenizer and de-tokenizer (UNet steps + VAE);
- packing: LLM training tokens/s with packed vs padded batches of the same samples
  (`benchmarks/llm_training_throughput.py`).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
# the section modules import this one as `run_all`: run as a script, that must be this module (its `_CLOCK`)
sys.modules.setdefault("run_all", sys.modules[__name__])


# `--clock cpu` swaps in the process's CPU time: on a machine shared with other jobs it counts only this process's
# work, where wall time also counts the waits for a core
_CLOCK: Callable[[], float] = time.perf_counter


def _timed(function: Callable[[], object]) -> float:
    start = _CLOCK()
    function()
    return _CLOCK() - start


def compare(
    name: str, ours: Callable, baseline: Callable | None, repeats: int, unit_count: float = 1.0
) -> dict:
    """Interleaved medians of `ours` and `baseline` (seconds per call); `ratio` > 1 means ours is faster."""
    ours()  # warm-up
    if baseline is not None:
        baseline()
    ours_times, baseline_times = [], []
    for _ in range(repeats):
        ours_times.append(_timed(ours))
        if baseline is not None:
            baseline_times.append(_timed(baseline))
    row = {
        "name": name,
        "ours_s": statistics.median(ours_times),
        "ours_spread": max(ours_times) / min(ours_times),
        "ours_per_s": unit_count / statistics.median(ours_times),
    }
    if baseline_times:
        row["baseline_s"] = statistics.median(baseline_times)
        row["baseline_spread"] = max(baseline_times) / min(baseline_times)
        row["ratio"] = row["baseline_s"] / row["ours_s"]
    print(_markdown_row(row), flush=True)
    return row


def _random_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    return model


def _llm_pair(hidden: int, layers: int, dtype: torch.dtype):
    """SEED-LLaMA with the release vocabulary layout and the stock LLaMA with the same weights."""
    from transformers import LlamaForCausalLM

    from seed_hf.modeling.configuration_seed_llama import SeedLlamaConfig
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM

    config = SeedLlamaConfig(
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875),
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 128, 1),
        num_key_value_heads=max(hidden // 128, 1),
        max_position_embeddings=512,
    )
    with torch.device("meta"):
        ours = SeedLlamaForCausalLM(config)
    ours = _random_weights(ours.to_empty(device="cpu")).to(dtype).eval()
    with torch.device("meta"):
        stock = LlamaForCausalLM(config)
    stock = stock.to_empty(device="cpu")
    stock.load_state_dict(ours.state_dict())
    return ours, stock.to(dtype).eval()


def decode_rows(args) -> list[dict]:
    hidden, layers = (256, 2) if args.quick else (2048, 16)
    ours, stock = _llm_pair(hidden, layers, torch.bfloat16)
    prompt = torch.randint(3, 30000, (1, 64), generator=torch.Generator().manual_seed(0))
    new_tokens = ours.config.tokens_per_image + 2  # one image: <img> + codes + </img>
    greedy = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    rows = []
    with torch.inference_mode():
        rows.append(
            compare(
                "decode, text (tok/s) vs stock LLaMA",
                lambda: ours.generate(prompt, constrain_images=False, **greedy),
                lambda: stock.generate(prompt, **greedy),
                args.repeats,
                new_tokens,
            )
        )
        rows.append(
            compare(
                "decode, image (tok/s) vs stock LLaMA",
                lambda: ours.generate(prompt, force_image=True, **greedy),
                lambda: stock.generate(prompt, **greedy),
                args.repeats,
                new_tokens,
            )
        )
        if not args.skip_compile:
            # both sides with a static cache; the compiled side swaps in a compiled forward for its calls
            eager_forward = ours.forward
            compiled_forward = torch.compile(eager_forward, dynamic=False)

            def static_generate(forward, **kwargs):
                ours.forward = forward
                try:
                    return ours.generate(prompt, cache_implementation="static", **greedy, **kwargs)
                finally:
                    ours.forward = eager_forward

            for kind, kwargs in (("text", {"constrain_images": False}), ("image", {"force_image": True})):
                compiled = functools.partial(static_generate, compiled_forward, **kwargs)
                # the first call compiles this kind's graphs (prefill, decode step); wall time, as the compiler
                # works in worker processes too
                start = time.perf_counter()
                compiled()
                compile_s = time.perf_counter() - start
                row = compare(
                    f"decode, {kind}, static cache: torch.compile vs eager",
                    compiled,
                    functools.partial(static_generate, eager_forward, **kwargs),
                    args.repeats,
                    new_tokens,
                )
                row["compile_s"] = compile_s
                rows.append(row)
    return rows


def encode_rows(args) -> list[dict]:
    from transformers import Blip2QFormerModel, Blip2VisionModel

    from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    config = SeedTokenizerConfig()
    if args.quick:
        config = SeedTokenizerConfig(
            vision_config={
                "hidden_size": 128,
                "intermediate_size": 256,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 112,
                "patch_size": 14,
            },
            qformer_config={
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 256,
            },
            decoder_config={"num_attention_heads": 2, "num_hidden_layers": 1},
        )
    with torch.device("meta"):
        ours = SeedTokenizerModel(config)
        vision, qformer = Blip2VisionModel(config.vision_config), Blip2QFormerModel(config.qformer_config)
    ours = _random_weights(ours.to_empty(device="cpu")).to(torch.bfloat16).eval()
    vision = vision.to_empty(device="cpu")
    vision.load_state_dict(ours.vision_model.state_dict())
    qformer = qformer.to_empty(device="cpu")
    qformer.load_state_dict(ours.qformer.state_dict())
    vision, qformer = vision.to(torch.bfloat16).eval(), qformer.to(torch.bfloat16).eval()
    batch = 4
    pixels = torch.randn(batch, 3, config.image_size, config.image_size, dtype=torch.bfloat16)
    queries = ours.query_tokens.expand(batch, -1, -1)

    def stock():
        features = vision(pixel_values=pixels).last_hidden_state
        return qformer(query_embeds=queries, encoder_hidden_states=features).last_hidden_state

    with torch.inference_mode():
        return [
            compare(
                "encode, bf16 (images/s) vs BLIP-2 blocks",
                lambda: ours.encode(pixels),
                stock,
                args.repeats,
                batch,
            )
        ]


def text_to_image_rows(args) -> list[dict]:
    """One pipeline call on the shipped model, and its parts timed on their own."""
    from text_to_image_latency import OLD_DEFAULT, old_default_call
    from transformers import pipeline

    import seed_hf  # noqa: F401

    drawer = pipeline("seed-text-to-image", model=str(REPOSITORY / "models" / "seed-shapes"))
    prompt = "a large red circle in the center on a white background"
    model, processor = drawer.model, drawer.processor
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        codes = drawer(prompt, seed=0)["image_codes"][0][None]
        detokenizer = drawer.detokenizer
        embeds = model.visual_tokenizer.decode(codes)
        rows = [
            compare(
                f"text-to-image, one call: shipped decoder default vs {OLD_DEFAULT} (s)",
                lambda: drawer(prompt, seed=0),
                lambda: old_default_call(drawer)(prompt),
                args.repeats,
            ),
            compare(
                "  LLM generation (s)", lambda: model.generate(**inputs, force_image=True), None, args.repeats
            ),
            compare(
                "  visual tokenizer decode (s)",
                lambda: model.visual_tokenizer.decode(codes),
                None,
                args.repeats,
            ),
            compare(
                "  de-tokenizer: UNet steps + VAE (s)",
                lambda: detokenizer(image_embeds=embeds, generator=torch.Generator().manual_seed(0)),
                None,
                args.repeats,
            ),
        ]
    return rows


def int8_rows(args) -> list[dict]:
    from int8_decode import int8_decode_rows  # it imports this module's helpers, so not at the top

    return int8_decode_rows(args)


def packing_rows(args) -> list[dict]:
    from llm_training_throughput import packing_rows as rows

    return rows(args)


SECTIONS = {
    "decode": decode_rows,
    "int8": int8_rows,
    "encode": encode_rows,
    "text-to-image": text_to_image_rows,
    "packing": packing_rows,
}


def _markdown_row(row: dict) -> str:
    baseline = f"{row['baseline_s']:.3f} s (x{row['baseline_spread']:.2f})" if "baseline_s" in row else "-"
    ratio = f"**{row['ratio']:.2f}x**" if "ratio" in row else "-"
    extra = f", compile {row['compile_s']:.1f} s" if "compile_s" in row else ""
    return (
        f"| {row['name']} | {row['ours_s']:.3f} s (x{row['ours_spread']:.2f}), {row['ours_per_s']:.2f}/s{extra} "
        f"| {baseline} | {ratio} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes: a smoke run of a few minutes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (median; at least 3)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile comparison")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or this process's CPU time (for a machine shared with other jobs)",
    )
    parser.add_argument(
        "--only",
        choices=sorted(SECTIONS),
        action="append",
        help="run only this part (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--output", default="outputs/benchmarks.json", help="JSON output (a .md table is written beside it)"
    )
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3, got {args.repeats}")
    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    header = "| benchmark | ours: median (max/min), rate | baseline: median (max/min) | speed-up |\n|---|---|---|---|"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'quick' if args.quick else 'full'} shapes, "
        f"{args.clock} clock"
    )
    print(header)
    rows = [row for name in args.only or SECTIONS for row in SECTIONS[name](args)]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_rss_mb:.0f} MiB")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {"quick": args.quick, "clock": args.clock, "peak_rss_mb": peak_rss_mb, "rows": rows}, indent=2
        )
        + "\n"
    )
    output.with_suffix(".md").write_text(
        "\n".join([header, *map(_markdown_row, rows), "", f"Peak RSS {peak_rss_mb:.0f} MiB."]) + "\n"
    )
    print(f"wrote {output} and {output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
