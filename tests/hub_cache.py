"""A warm Hugging Face cache laid out on disk, as `huggingface_hub` leaves it after a download.

Tests that use repo ids run with `HF_HUB_OFFLINE=1` against such a cache: `models--ORG--NAME/snapshots/<sha>/...`
holds the files (blobs are plain copies here, not symlinks into `blobs/`, which the offline loaders do not need)
and `refs/<revision>` names the snapshot.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path


def repo_folder_name(repo_id: str, repo_type: str = "model") -> str:
    return f"{repo_type}s--{repo_id.replace('/', '--')}"


def lay_into_cache(
    cache_dir: str | Path,
    repo_id: str,
    source: str | Path | dict[str, str | Path],
    *,
    revision: str = "main",
    repo_type: str = "model",
) -> str:
    """
    Put `source` (a folder, or a mapping path-in-repo -> local file) into `cache_dir` as snapshot of `repo_id` at
    branch `revision`; return the snapshot's commit sha.
    """
    files = (
        {str(path.relative_to(source)): path for path in sorted(Path(source).rglob("*")) if path.is_file()}
        if not isinstance(source, dict)
        else {name: Path(path) for name, path in source.items()}
    )
    digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
    for name in sorted(files):
        digest.update(name.encode())
        digest.update(files[name].read_bytes())
    sha = digest.hexdigest()
    repo_folder = Path(cache_dir) / repo_folder_name(repo_id, repo_type)
    snapshot = repo_folder / "snapshots" / sha
    for name, path in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    ref = repo_folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(sha)
    return sha


def environment_without_seed_hf(root: Path) -> Path:
    """A virtual environment that has torch, transformers and diffusers (this environment's installed copies, via a
    .pth file) but not seed-hf (its editable install is a finder that a .pth'd folder does not run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    import torch as installed_torch

    site_packages = Path(installed_torch.__file__).resolve().parents[1]
    Path(purelib, "installed.pth").write_text(f"{site_packages}\n")
    return python
