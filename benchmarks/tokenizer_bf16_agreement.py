"""How often bf16 codes agree with fp32 codes on each parity fixture (random weights: thin margins).

Usage: python benchmarks/tokenizer_bf16_agreement.py [fixture folders...]
Default: the fixtures bundled in tests/ plus those under ../shared/fixtures/seed-reference/.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from seed_hf.convert import convert_reference_fixture

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = [
    ROOT / "tests" / "fixtures" / "seed-reference",
    ROOT.parent / "shared" / "fixtures" / "seed-reference",
]


def main() -> None:
    folders = [Path(p) for p in sys.argv[1:]] or [
        config.parent
        for root in DEFAULT_ROOTS
        if root.exists()
        for config in sorted(root.rglob("config.json"))
    ]
    for folder in folders:
        model = convert_reference_fixture(folder)
        pixel_values = load_file(str(folder / "inputs.safetensors"))["pixel_values"]
        with torch.inference_mode():
            codes_fp32 = model.encode(pixel_values)
            codes_bf16 = model.to(torch.bfloat16).encode(pixel_values.bfloat16())
        agree = (codes_fp32 == codes_bf16).float().mean().item()
        print(f"{folder}: bf16 codes equal fp32 codes at {agree:.1%} of {codes_fp32.numel()} positions")


if __name__ == "__main__":
    main()
