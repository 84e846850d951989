"""Resumption from `Trainer` checkpoints that survives an interrupted save.

The `Trainer` writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG state) and
`trainer_state.json` last, so a run stopped during a save (SIGTERM, SIGKILL, a full disk) leaves a folder that
`transformers.trainer_utils.get_last_checkpoint` still returns and that `Trainer.train` then fails to load
("Can't find a valid checkpoint"): every rerun fails the same way. [`last_complete_checkpoint`] returns the newest
complete checkpoint instead and removes the incomplete ones after it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

from seed_hf.logging_utils import get_logger

logger = get_logger(__name__)
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"
# a model's (or a peft adapter's) weights as `save_pretrained` writes them, sharded or not
_WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.bin",
)


def _safetensors_is_whole(path: Path) -> bool:
    """Whether a safetensors file is as long as its header says (a save cut short leaves it shorter)."""
    size = path.stat().st_size
    if size < 8:
        return False
    with open(path, "rb") as file:
        (header_length,) = struct.unpack("<Q", file.read(8))
        if 8 + header_length > size:
            return False
        try:
            header = json.loads(file.read(header_length))
        except ValueError:
            return False
    data_length = max(
        (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0
    )
    return size == 8 + header_length + data_length


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """
    Whether a `Trainer` checkpoint folder was saved to the end: it holds `trainer_state.json` (written last) and
    model weights, and each of its safetensors files is whole.
    """
    folder = Path(folder)
    if not (folder / TRAINER_STATE_FILE).is_file():
        return False
    if not any((folder / name).is_file() for name in _WEIGHTS_FILES):
        return False
    return all(_safetensors_is_whole(path) for path in folder.rglob("*.safetensors"))


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """
    The newest complete `checkpoint-N` folder of a `Trainer` output folder ([`is_complete_checkpoint`]), or `None`.
    Incomplete checkpoints newer than it (the remains of an interrupted save) are removed, with a log line, so that
    the resumed run can save those steps again.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    checkpoints = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT_NAME.match(path.name))
    )
    for _, path in reversed(checkpoints):
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning("removing the incomplete checkpoint %s (its save was interrupted)", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def resolve_resume_from_checkpoint(
    resume_from_checkpoint: str | bool | None, output_dir: str | os.PathLike
) -> str | None:
    """
    `Trainer.train`'s `resume_from_checkpoint` with `True` ("the last one") replaced by the newest complete
    checkpoint of `output_dir` (`None` when there is none: the run starts fresh); a path is returned as is.
    """
    if resume_from_checkpoint is True:
        return last_complete_checkpoint(output_dir)
    return resume_from_checkpoint or None


__all__ = ["is_complete_checkpoint", "last_complete_checkpoint", "resolve_resume_from_checkpoint"]
