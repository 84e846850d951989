"""Atomic folder writes: the caller's umask, and refusals that prevent data loss."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from seed_hf.io_utils import staged_directory


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_folders_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with staged_directory(tmp_path / "out") as staging:
            (staging / "config.json").write_text("{}")
            (staging / "sub").mkdir()
            # safetensors writes its files 0600 whatever the umask
            save_file({"weight": torch.zeros(2)}, staging / "sub" / "model.safetensors")
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in (out, out / "sub")}
    modes |= {
        path: stat.S_IMODE(path.stat().st_mode)
        for path in (out / "config.json", out / "sub/model.safetensors")
    }
    assert modes == {
        out: 0o777 & ~umask,
        out / "sub": 0o777 & ~umask,
        out / "config.json": 0o666 & ~umask,
        out / "sub/model.safetensors": 0o666 & ~umask,
    }


def test_a_folder_holding_an_input_is_not_replaced(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    source = folder / "seed_quantizer.pt"
    source.write_bytes(b"weights")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="it holds the input"):
        with staged_directory(folder, inputs=[source]):
            pass
    assert source.read_bytes() == b"weights" and (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # no staging left


def test_the_current_directory_is_not_replaced(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work / "sub")
    for target in (".", "..", str(work)):
        with pytest.raises(ValueError, match="current directory or one of its parents"):
            with staged_directory(target):
                pass
    assert (work / "keep.txt").read_text() == "mine"


def test_an_error_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_directory(target) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_convert_tokenizer_overwrite_refuses_the_folder_holding_its_checkpoint(tmp_path):
    import shutil
    from pathlib import Path

    from seed_hf.convert import convert_seed_tokenizer

    fixture = Path(__file__).parent / "fixtures" / "seed-reference" / "small-b"
    folder = tmp_path / "release"
    folder.mkdir()
    checkpoint = folder / "seed_quantizer.pt"
    shutil.copyfile(fixture / "original_state_dict.pt", checkpoint)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="it holds the input"):
        convert_seed_tokenizer(
            checkpoint, folder, config=json.loads((fixture / "config.json").read_text()), overwrite=True
        )
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "seed_quantizer.pt"]
