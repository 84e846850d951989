"""Decode speed of int8 weight-only SEED-LLaMA against bf16, on CPU.

The int8 model is what users get from `SeedLlamaForCausalLM.from_pretrained(..., quantization_config=
TorchAoConfig(Int8WeightOnlyConfig()))` (torchao; the embeddings and the LM head stay bf16), loaded from a bf16
checkpoint of the same random weights; activations are bf16 on both sides. Each comparison runs the two
interleaved (A B A B ...) through `run_all.compare`: medians, their ratio (> 1: int8 is faster) and the spread
(max/min). Greedy, 64-token prompt, one image's worth of new tokens (`<img>` + 32 codes + `</img>`).

- eager: `generate` as is. torchao's eager int8 weight-only linear converts the whole int8 weight to bf16 on every
  call before a bf16 matmul, so it is slower than bf16 on CPU;
- compiled: static cache + `torch.compile` of the forward on both sides (first call = compile time, reported
  apart). Inductor fuses the conversion into the matmul (CPU's `_weight_int8pack_mm` pattern): half the bytes
  read per decode step.

    python benchmarks/int8_decode.py            # 1B shape: 16 layers x 2048 hidden, release vocabulary layout
    python benchmarks/int8_decode.py --quick    # 2 layers x 256 hidden, a smoke run
"""

from __future__ import annotations

import argparse
import functools
import tempfile

import torch
from run_all import _llm_pair, _timed, compare

PROMPT_LENGTH = 64


def _bf16_and_int8(hidden: int, layers: int):
    """SEED-LLaMA with random bf16 weights (`run_all._llm_pair`) and the same weights loaded int8 from its saved
    checkpoint with `quantization_config`."""
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM

    bf16, _ = _llm_pair(hidden, layers, torch.bfloat16)
    with tempfile.TemporaryDirectory() as folder:
        bf16.save_pretrained(folder)
        int8 = SeedLlamaForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16, quantization_config=TorchAoConfig(Int8WeightOnlyConfig())
        ).eval()
    return bf16, int8


def _static_compiled_generate(model, prompt, **kwargs):
    """`generate` with a static cache through a compiled forward (compiled on the first call)."""
    eager_forward, compiled_forward = model.forward, torch.compile(model.forward, dynamic=False)

    def run():
        model.forward = compiled_forward
        try:
            return model.generate(prompt, cache_implementation="static", **kwargs)
        finally:
            model.forward = eager_forward

    return run


def int8_decode_rows(args) -> list[dict]:
    """Rows of `run_all.compare` (ours = int8, baseline = bf16): eager text and image decode, and unless
    `args.skip_compile` compiled image decode. `args`: `quick`, `repeats`, `skip_compile`."""
    hidden, layers = (256, 2) if args.quick else (2048, 16)
    bf16, int8 = _bf16_and_int8(hidden, layers)
    prompt = torch.randint(3, 30000, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))
    new_tokens = bf16.config.tokens_per_image + 2
    greedy = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    rows = []
    with torch.inference_mode():
        for kind, kwargs in (("text", {"constrain_images": False}), ("image", {"force_image": True})):
            rows.append(
                compare(
                    f"decode, {kind}, eager: int8 weight-only vs bf16 (tok/s)",
                    functools.partial(int8.generate, prompt, **kwargs, **greedy),
                    functools.partial(bf16.generate, prompt, **kwargs, **greedy),
                    args.repeats,
                    new_tokens,
                )
            )
        if not args.skip_compile:
            compiled = {
                name: _static_compiled_generate(model, prompt, force_image=True, **greedy)
                for name, model in (("int8", int8), ("bf16", bf16))
            }
            compile_s = {name: _timed(run) for name, run in compiled.items()}
            # linears inductor turned into CPU's int8 weight-only kernel (both graphs: prefill, decode step)
            int8_kernels = torch._dynamo.utils.counters["inductor"]["woq_matcher_count"]
            row = compare(
                "decode, image, static cache + torch.compile: int8 weight-only vs bf16 (tok/s)",
                compiled["int8"],
                compiled["bf16"],
                args.repeats,
                new_tokens,
            )
            row["compile_s"], row["baseline_compile_s"] = compile_s["int8"], compile_s["bf16"]
            row["int8_kernel_linears"] = int8_kernels
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (median; at least 3)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile comparison")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'quick' if args.quick else '1B'} shape"
    )
    print(
        "| benchmark | int8: median (max/min), rate | bf16: median (max/min) | speed-up |\n|---|---|---|---|"
    )
    rows = int8_decode_rows(args)
    for row in rows:
        if "baseline_compile_s" in row:
            print(
                f"compile: int8 {row['compile_s']:.1f} s, bf16 {row['baseline_compile_s']:.1f} s; linears on "
                f"_weight_int8pack_mm: {row['int8_kernel_linears']}"
            )
    print("int8 / bf16 decode speed: " + ", ".join(f"{row['ratio']:.2f}x ({row['name']})" for row in rows))


if __name__ == "__main__":
    main()
