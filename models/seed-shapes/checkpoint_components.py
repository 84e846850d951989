"""Where the parts of a SEED checkpoint are.

A SEED system checkpoint holds SEED-LLaMA at the top, the visual tokenizer in `visual_tokenizer/` and the unCLIP
de-tokenizer in `detokenizer/`, each named in the LLM's config by a path relative to the checkpoint. A relative
component resolves inside the checkpoint it belongs to: the same local folder, or the same Hub repo with the same
`revision`, `cache_dir`, `token`, `local_files_only` and `subfolder` that the checkpoint was loaded with (offline
mode and a warm cache included, as `huggingface_hub` handles them).

This file also travels with saved checkpoints as remote code, so it imports nothing from seed-hf.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

# `from_pretrained` arguments that say where and how a checkpoint was fetched; its components use the same ones.
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only")


def hub_kwargs_of(kwargs: dict) -> dict:
    """The arguments of a `from_pretrained` call that components of the same checkpoint must be fetched with."""
    return {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}


def is_relative_component(name_or_path: str) -> bool:
    """`visual_tokenizer` or `../visual_tokenizer` are inside the checkpoint; `/abs/path` and `org/name` are not
    (a name with a slash is taken for a repo id, as transformers does, unless it starts with `.`)."""
    if os.path.isabs(name_or_path):
        return False
    return "/" not in name_or_path.replace(os.sep, "/") or name_or_path.startswith(".")


def component_folder(
    checkpoint: str | os.PathLike | None,
    name_or_path: str,
    subfolder: str | None = None,
    hub_kwargs: dict | None = None,
) -> str:
    """
    A local folder holding the component `name_or_path` of the checkpoint loaded from `checkpoint` (a folder or a
    Hub repo id, with `subfolder` inside it). Relative names resolve inside that checkpoint; for a repo id only the
    component's files are fetched (`snapshot_download(allow_patterns=...)`). Absolute paths and other repo ids are
    returned as they are, for `from_pretrained` to resolve.

    Raises `OSError` naming the component when it is not in the checkpoint.
    """
    hub_kwargs = dict(hub_kwargs or {})
    if checkpoint is None or not str(checkpoint) or not is_relative_component(name_or_path):
        return name_or_path
    checkpoint = str(checkpoint)
    inside = posixpath.normpath(posixpath.join(subfolder or "", name_or_path.replace(os.sep, "/")))
    if os.path.isdir(checkpoint):
        folder = os.path.normpath(os.path.join(checkpoint, *inside.split("/")))
        if not os.path.isdir(folder):
            raise OSError(f"the checkpoint folder {checkpoint!r} has no component folder {inside!r}")
        return folder
    if inside.startswith(".."):
        raise ValueError(f"component {name_or_path!r} points outside the Hub repo {checkpoint!r}")
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(checkpoint, allow_patterns=[f"{inside}/*"], **hub_kwargs)
    folder = os.path.join(snapshot, *inside.split("/"))
    if not os.path.isdir(folder):
        raise OSError(
            f"the checkpoint {checkpoint!r} (revision {hub_kwargs.get('revision') or 'main'}) has no component "
            f"folder {inside!r}"
        )
    return folder


@contextmanager
def readable_weights(name_or_path) -> Iterator[None]:
    """Turn safetensors' parse errors while loading `name_or_path` into an `OSError` that names the checkpoint."""
    try:
        yield
    except SafetensorError as error:
        raise OSError(
            f"the weights of {str(name_or_path)!r} cannot be read: a safetensors file there is truncated or corrupt "
            f"({error}); download or save it again"
        ) from error


def code_files(module_file: str | os.PathLike) -> list[Path]:
    """
    `module_file` and every file it imports relatively, recursively: the code a checkpoint needs to load it with
    `trust_remote_code=True`. A relative import resolves beside the importing file or, in seed-hf's source tree,
    in its `modeling/` folder (pipelines import the modeling files, which the checkpoint holds side by side).
    """
    module_file = Path(module_file).resolve()
    search = [module_file.parent, module_file.parent.parent / "modeling"]
    files, pending = [], [module_file]
    while pending:
        path = pending.pop()
        if path in files:
            continue
        files.append(path)
        for name in re.findall(
            r"^\s*from\s+\.(\w+)\s+import", path.read_text(encoding="utf-8"), re.MULTILINE
        ):
            found = next(
                (folder / f"{name}.py" for folder in search if (folder / f"{name}.py").is_file()), None
            )
            if found is None:
                raise FileNotFoundError(f"{path.name} imports .{name}, which is not beside it")
            pending.append(found)
    return files


def copy_code_files(module_file: str | os.PathLike, folder: str | os.PathLike) -> list[str]:
    """Copy `code_files(module_file)` flat into `folder`; return their names."""
    names = []
    for path in code_files(module_file):
        shutil.copyfile(path, os.path.join(folder, path.name))
        names.append(path.name)
    return names


__all__ = [
    "HUB_KWARGS",
    "code_files",
    "component_folder",
    "copy_code_files",
    "hub_kwargs_of",
    "is_relative_component",
    "readable_weights",
]
