"""Encode throughput (images/s) of the full-size SEED tokenizer with random weights, fp32 and bf16.

Usage: python benchmarks/tokenizer_throughput.py [--batch-sizes 1 4] [--iterations 3] [--threads N]
Prints one line per (dtype, batch size). Random weights: the figure measures compute, not quality.
"""

import argparse
import time

import torch

from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig
from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel


def build_model(dtype: torch.dtype) -> SeedTokenizerModel:
    # Random normal weights are enough for timing; skipping the library's init keeps start-up short.
    with torch.device("meta"):
        model = SeedTokenizerModel(SeedTokenizerConfig())
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
    return model.to(dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        model = build_model(dtype)
        for batch_size in args.batch_sizes:
            pixel_values = torch.randn(batch_size, 3, 224, 224, dtype=dtype)
            with torch.inference_mode():
                model.encode(pixel_values)  # warm-up
                start = time.perf_counter()
                for _ in range(args.iterations):
                    model.encode(pixel_values)
                elapsed = time.perf_counter() - start
            images_per_second = batch_size * args.iterations / elapsed
            print(
                f"{dtype_name:9s} batch {batch_size}: {images_per_second:.3f} images/s "
                f"({elapsed / args.iterations:.2f} s per batch)",
                flush=True,
            )
        del model


if __name__ == "__main__":
    main()
