"""Comparing the outputs of two training runs."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from seed_hf.training.shapes.run import CHECKPOINTS_FOLDER


def assert_same_weights(first_run: Path, second_run: Path) -> int:
    """Every safetensors file of `first_run`'s stage outputs (Trainer checkpoints aside) exists in `second_run` with
    bit-identical tensors; returns the number of files compared."""
    files = sorted(
        path.relative_to(first_run)
        for path in first_run.rglob("*.safetensors")
        if CHECKPOINTS_FOLDER not in path.parts
    )
    assert files, f"no weights under {first_run}"
    for file in files:
        second = load_file(second_run / file)
        first = load_file(first_run / file)
        assert second.keys() == first.keys(), file
        for name, tensor in first.items():
            torch.testing.assert_close(second[name], tensor, rtol=0, atol=0, msg=f"{file}: {name}")
    return len(files)
