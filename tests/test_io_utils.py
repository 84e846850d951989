"""Atomic file and folder writes: the caller's umask, refusals that prevent data loss, and failed writes (a
raised error, a real file-size limit) that leave the old content."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import save_file

from seed_hf.io_utils import staged_directory, write_file_atomically, write_text_atomically


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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = write_text_atomically(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(previous)
    # the temporary file comes from mkstemp (0600): the rename must not carry that mode over
    assert (stat.S_IMODE(path.stat().st_mode), path.read_text()) == (0o666 & ~umask, "{}\n")


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("old")

    def write_half_then_fail(temporary):
        temporary.write_text("new, half")
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        write_file_atomically(path, write_half_then_fail)
    assert [(p.name, p.read_text()) for p in tmp_path.iterdir()] == [("results.md", "old")]


def test_a_write_over_the_file_size_limit_leaves_the_old_file(tmp_path):
    """A real write limit (`ulimit -f`, 1 KiB blocks): the new content does not fit; the old file is kept whole."""
    path = tmp_path / "metrics.json"
    path.write_text("old")
    script = (
        "import sys\n"
        "from seed_hf.io_utils import write_text_atomically\n"
        "try:\n"
        "    write_text_atomically(sys.argv[1], 'x' * 200_000)\n"
        "except OSError as error:\n"
        "    print(type(error).__name__, error.errno)\n"
    )
    result = subprocess.run(
        ["bash", "-c", 'ulimit -f 64 && exec "$0" -c "$1" "$2"', sys.executable, script, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["OSError", "27"]  # EFBIG: Python ignores SIGXFSZ, the write fails
    assert [(p.name, p.read_text()) for p in tmp_path.iterdir()] == [("metrics.json", "old")]


def test_concurrent_writers_of_one_file_leave_one_whole_version(tmp_path):
    path = tmp_path / "stage_times.json"
    versions = [json.dumps({"writer": index, "padding": "x" * 100_000}) for index in range(8)]
    threads = [threading.Thread(target=write_text_atomically, args=(path, text)) for text in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_text() in versions
    assert [p.name for p in tmp_path.iterdir()] == ["stage_times.json"]


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
