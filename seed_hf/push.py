"""Publishing of SEED checkpoints to the Hugging Face Hub: `seed-hf push FOLDER REPO_ID`.

A whole SEED system folder (LLM + processor, `visual_tokenizer/`, `detokenizer/`) or one component folder goes up
as ONE commit, so a reader of the repo never sees half a checkpoint. What is uploaded is decided before the first
byte goes out:

- pickles (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`, `*.pickle`) stop the push: loading them runs arbitrary
  code, and every SEED weight has a safetensors form;
- training leftovers (`checkpoint-*/`, `logs/`, `runs/`, `*.log`, `events.out.tfevents*`), caches
  (`__pycache__/`, `*.pyc`) and hidden files or folders (`.git/`, `.cache/`, the `.name.xxxx` staging folders of
  [`staged_directory`]) are left out;
- everything else is uploaded, notably the `.py` remote code that sits next to `config.json`.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.utils import validate_repo_id

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
REPO_TYPES = ("model", "space")
# Folders that hold training state, logs or caches; none of it belongs in a published checkpoint.
LEFT_OUT_FOLDER_PATTERNS = ("checkpoint-*", "logs", "runs", "__pycache__")
LEFT_OUT_FILE_PATTERNS = ("*.log", "events.out.tfevents*", "*.pyc")
# A Space needs an SDK at creation; the repo's demo is a gradio app.
SPACE_SDK = "gradio"


def _is_left_out(name: str, patterns: tuple[str, ...]) -> bool:
    # Hidden names cover `.git/`, `.cache/` and the staging folders `.name.xxxx` of an interrupted write.
    return name.startswith(".") or any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def collect_upload_files(folder: str | os.PathLike) -> tuple[list[tuple[str, Path]], list[str]]:
    """
    Decide what a push of `folder` uploads, without contacting anything.

    Args:
        folder (`str` or `os.PathLike`): a SEED system folder or one component folder.

    Returns:
        `tuple[list[tuple[str, Path]], list[str]]`: the uploads as `(path_in_repo, local_path)` pairs and the
        left-out paths (folders end with `/`), both relative to `folder` in POSIX form and sorted.

    Raises:
        `ValueError`: `folder` is not a folder, holds no file to upload, or holds pickle files (all are named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder not found: {folder}")
    uploads: list[tuple[str, Path]] = []
    left_out: list[str] = []
    pickles: list[str] = []
    # Symlinked folders are followed: a system folder may link its components from elsewhere.
    for root, folder_names, file_names in os.walk(folder, followlinks=True):
        root = Path(root)
        relative_root = root.relative_to(folder).as_posix()
        prefix = "" if relative_root == "." else f"{relative_root}/"
        kept_folders = []
        for name in sorted(folder_names):
            if _is_left_out(name, LEFT_OUT_FOLDER_PATTERNS):
                left_out.append(f"{prefix}{name}/")
            else:
                kept_folders.append(name)
        folder_names[:] = kept_folders  # os.walk descends only into what is left here
        for name in sorted(file_names):
            path_in_repo = f"{prefix}{name}"
            if _is_left_out(name, LEFT_OUT_FILE_PATTERNS):
                left_out.append(path_in_repo)
            elif name.lower().endswith(PICKLE_SUFFIXES):
                pickles.append(path_in_repo)
            else:
                uploads.append((path_in_repo, root / name))
    if pickles:
        raise ValueError(
            f"refusing to push pickle files (only safetensors weights are published): {', '.join(sorted(pickles))}"
            f" in {folder}; convert them to safetensors or remove them"
        )
    if not uploads:
        raise ValueError(f"no files to push in {folder}")
    return sorted(uploads), sorted(left_out)


def _format_size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{num_bytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _repo_url(repo_id: str, repo_type: str) -> str:
    return f"{constants.ENDPOINT}/{'spaces/' if repo_type == 'space' else ''}{repo_id}"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    api: HfApi | None = None,
) -> str:
    """
    Upload `folder` to the Hub repo `repo_id` as one commit (see [`collect_upload_files`] for what goes up).

    The repo is created if needed (`exist_ok=True`), and so is the branch `revision`. The files to upload are
    decided, and pickles refused, before anything is contacted.

    Args:
        folder (`str` or `os.PathLike`): the folder to push.
        repo_id (`str`): `"namespace/name"` (or `"name"` in the token owner's namespace).
        repo_type (`str`, *optional*, defaults to `"model"`): `"model"` or `"space"` (created with the gradio SDK).
        private (`bool`, *optional*): visibility of a repo this call creates; `None` keeps the namespace's
            default. An existing repo keeps its visibility.
        revision (`str`, *optional*): branch to commit to (created from the default branch if absent); default:
            the repo's default branch.
        commit_message (`str`, *optional*): defaults to `"Upload <folder name> with seed-hf"`.
        token (`str`, *optional*): Hub token; default: the locally saved login or `HF_TOKEN`.
        dry_run (`bool`, *optional*, defaults to `False`): print the plan (each upload with its size, then what
            is left out) and contact nothing.
        api (`HfApi`, *optional*): the client to use; default: `HfApi(token=token)`.

    Returns:
        `str`: the repo's URL, or for a dry run the plan that was printed.

    Raises:
        `ValueError`: bad `repo_id` or `repo_type`, missing or empty `folder`, pickle files in `folder`.
    """
    validate_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    folder = Path(folder)
    uploads, left_out = collect_upload_files(folder)
    if commit_message is None:
        commit_message = f"Upload {folder.resolve().name} with seed-hf"
    total_size = sum(path.stat().st_size for _, path in uploads)

    if dry_run:
        lines = [
            f"dry run: would push {len(uploads)} files ({_format_size(total_size)}) from {folder} to "
            f"{_repo_url(repo_id, repo_type)} (branch {revision or 'default'}) in one commit: {commit_message!r}",
            *(
                f"  upload  {path_in_repo}  {_format_size(path.stat().st_size)}"
                for path_in_repo, path in uploads
            ),
            *(f"  skip    {path}" for path in left_out),
        ]
        plan = "\n".join(lines)
        print(plan)
        return plan

    api = api if api is not None else HfApi(token=token)
    repo_url = api.create_repo(
        repo_id,
        token=token,
        private=private,
        repo_type=repo_type,
        exist_ok=True,
        space_sdk=SPACE_SDK if repo_type == "space" else None,
    )
    if revision is not None:
        api.create_branch(repo_id, branch=revision, token=token, repo_type=repo_type, exist_ok=True)
    commit = api.create_commit(
        repo_id,
        operations=[
            CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=path)
            for path_in_repo, path in uploads
        ],
        commit_message=commit_message,
        token=token,
        repo_type=repo_type,
        revision=revision,
    )
    url = str(repo_url) if repo_url else _repo_url(repo_id, repo_type)
    print(f"pushed {len(uploads)} files ({_format_size(total_size)}) to {url}")
    commit_url = getattr(commit, "commit_url", None)
    if commit_url:
        print(f"commit: {commit_url}")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seed-hf push",
        description="Upload a SEED checkpoint folder (a whole system or one component) to the Hugging Face Hub "
        "as one commit. Pickle files are refused; checkpoint-*/, logs, caches and hidden files are left out.",
    )
    parser.add_argument("folder", help="the checkpoint folder to upload, e.g. models/seed-shapes")
    parser.add_argument(
        "repo_id", help="the Hub repo to upload to, e.g. my-org/seed-shapes (created if needed)"
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="create the repo private (an existing repo keeps its visibility)",
    )
    parser.add_argument(
        "--revision", help="branch to commit to, created if absent; default: the repo's default branch"
    )
    parser.add_argument(
        "--commit-message", help="message of the commit; default: 'Upload <folder name> with seed-hf'"
    )
    parser.add_argument(
        "--repo-type",
        choices=REPO_TYPES,
        default="model",
        help="kind of repo: model (default) or space (created with the gradio SDK)",
    )
    parser.add_argument("--token", help="Hub token; default: the saved login (hf auth login) or HF_TOKEN")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be uploaded (with sizes) and what is left out; contact nothing",
    )
    args = parser.parse_args(argv)
    try:
        push_folder(
            args.folder,
            args.repo_id,
            repo_type=args.repo_type,
            private=True if args.private else None,
            revision=args.revision,
            commit_message=args.commit_message,
            token=args.token,
            dry_run=args.dry_run,
        )
    except ValueError as error:  # input errors (folder, pickles, repo id): one line, no traceback
        message = " ".join(str(error).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0


__all__ = ["collect_upload_files", "main", "push_folder"]
