"""Fetching the official SEED release for `seed-hf convert-release` ([`~seed_hf.convert_release`]).

Only the files the conversion needs are downloaded from the three release repos, and they are laid out as local
views (links into the Hub cache) that hold nothing else of the snapshots: the SEED tokenizer checkpoint, the
SEED-LLaMA config, weights and text tokenizer, and the unCLIP components the de-tokenizer keeps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import filter_repo_objects

from seed_hf.logging_utils import get_logger

logger = get_logger(__name__)

RELEASE_TOKENIZER_REPO = "AILab-CVC/seed-tokenizer-2"
RELEASE_LLM_REPO = "AILab-CVC/seed-llama-8b-sft"
RELEASE_UNCLIP_REPO = "stabilityai/stable-diffusion-2-1-unclip"

# The authors' SEED tokenizer checkpoint in the tokenizer repo.
QUANTIZER_FILE = "seed_quantizer.pt"
# A LLaMA text tokenizer in any of its saved forms (sentencepiece in the release, `tokenizer.json` when fast).
TEXT_TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
# the files among them that hold the vocabulary
TEXT_VOCABULARY_FILES = ("tokenizer.model", "tokenizer.json")
LLM_CONFIG_FILES = ("config.json", "generation_config.json")
LLM_SAFETENSORS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
LLM_BIN = ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")
# unCLIP components the de-tokenizer keeps -> weight file stem (safetensors, bin); None: no weights.
UNCLIP_COMPONENTS: dict[str, tuple[str, str] | None] = {
    "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "image_normalizer": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "text_encoder": ("model", "pytorch_model"),
    "tokenizer": None,
    "scheduler": None,
    "image_noising_scheduler": None,
}
UNCLIP_CONFIG_FILES = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "image_normalizer/config.json",
    "text_encoder/config.json",
    "tokenizer/*.json",
    "tokenizer/*.txt",
    "scheduler/scheduler_config.json",
    "image_noising_scheduler/scheduler_config.json",
)
# Class names the authors' tokenizer_config.json may carry; the files are a plain LLaMA tokenizer.
_AUTHOR_TOKENIZER_CLASSES = {"SeedLlamaTokenizer": "LlamaTokenizer"}

# Python argument -> command-line flag, to name both in error messages.
_FLAGS = {
    "tokenizer_repo": "--tokenizer",
    "llm_repo": "--llm",
    "unclip_repo": "--unclip",
    "output_dir": "--output-dir",
    "dtype": "--dtype",
    "chat_template": "--chat-template",
    "tokenizer_config": "--tokenizer-config",
    "tokenizer_reference": "--tokenizer-reference",
    "unclip_variant": "--unclip-variant",
    "push_to_hub": "--push-to-hub",
}


class ReleaseConversionError(ValueError):
    """A release repo lacks what the conversion needs, or the converted folder fails its check."""


def argument_label(name: str) -> str:
    """`name` as an error message names it: the Python argument and, when it has one, its command-line flag."""
    flag = _FLAGS.get(name)
    return f"`{name}` ({flag})" if flag else f"`{name}`"


@dataclasses.dataclass
class ReleaseSources:
    """
    Local views of the fetched release files: folders holding only the selected files (links into the Hub cache).

    Attributes:
        tokenizer_dir (`Path`): `seed_quantizer.pt` (+ the text tokenizer files of the tokenizer repo).
        llm_dir (`Path`): the LLM config and weights, with the text tokenizer (from the LLM repo when it has one,
            else from the tokenizer repo).
        unclip_dir (`Path`): the unCLIP components the de-tokenizer keeps.
        files (`dict[str, list[str]]`): per repo id, the repo paths selected.
        commits (`dict[str, str]`): per repo id, the commit of the snapshot used.
        text_tokenizer_repo (`str`): the repo the text tokenizer came from.
    """

    tokenizer_dir: Path
    llm_dir: Path
    unclip_dir: Path
    files: dict[str, list[str]]
    commits: dict[str, str]
    text_tokenizer_repo: str


def _snapshot(repo_id: str, argument: str, patterns: list[str], hub_kwargs: dict) -> Path:
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, **hub_kwargs))
    except Exception as error:  # not cached offline, unknown repo or revision, no connection, gated ...
        raise ReleaseConversionError(
            f"cannot fetch {repo_id} ({argument_label(argument)}): {type(error).__name__}: {error}"
        ) from error


def _link(source: Path, target: Path) -> None:
    """`target` -> `source` as a symlink, or a copy where the filesystem has no symlinks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)


def _link_selected(snapshot: Path, patterns: list[str], view: Path) -> list[str]:
    """Link the files of `snapshot` that match `patterns` into `view`; return their repo paths."""
    present = sorted(path.relative_to(snapshot).as_posix() for path in snapshot.rglob("*") if path.is_file())
    selected = list(filter_repo_objects(present, allow_patterns=patterns))
    for name in selected:
        _link(snapshot / name, view / name)
    return selected


def _fetch_into(
    repo_id: str, argument: str, patterns: list[str], view: Path, hub_kwargs: dict, commits: dict[str, str]
) -> list[str]:
    snapshot = _snapshot(repo_id, argument, patterns, hub_kwargs)
    commits[repo_id] = snapshot.name
    return _link_selected(snapshot, patterns, view)


def _weight_patterns(component: str, stem: str, suffix: str, variant: str | None) -> list[str]:
    dot_variant = f".{variant}" if variant else ""
    return [
        f"{component}/{stem}{dot_variant}.{suffix}",
        f"{component}/{stem}{dot_variant}-*-of-*.{suffix}",
        f"{component}/{stem}.{suffix}.index{dot_variant}.json",
    ]


def fetch_release(
    work_dir: str | os.PathLike,
    *,
    tokenizer_repo: str = RELEASE_TOKENIZER_REPO,
    llm_repo: str = RELEASE_LLM_REPO,
    unclip_repo: str = RELEASE_UNCLIP_REPO,
    revision_tokenizer: str | None = None,
    revision_llm: str | None = None,
    revision_unclip: str | None = None,
    unclip_variant: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> ReleaseSources:
    """
    Fetch only the release files the conversion needs with `huggingface_hub.snapshot_download` and lay them out
    as three local views under `work_dir` (links into the cache; nothing else of the snapshots is visible there).

    Weights come in one format: safetensors when the repo has them, else the `.bin` files (the SEED-LLaMA release
    has only `pytorch_model-*.bin` shards). The unCLIP repo's `image_encoder/` and `feature_extractor/` are never
    fetched.

    Args:
        work_dir (`str` or `os.PathLike`): where the views are created (`tokenizer/`, `llm/`, `unclip/`).
        tokenizer_repo, llm_repo, unclip_repo (`str`): the Hub repos of the SEED tokenizer, the SEED-LLaMA model
            and the unCLIP Stable Diffusion pipeline.
        revision_tokenizer, revision_llm, revision_unclip (`str`, *optional*): branch, tag or commit of each.
        unclip_variant (`str`, *optional*): fetch the unCLIP weights of this variant (e.g. `"fp16"`).
        cache_dir (`str` or `os.PathLike`, *optional*): the Hugging Face cache to use.
        token (`str` or `bool`, *optional*): Hub token.
        local_files_only (`bool`, *optional*, defaults to `False`): use the cache only.

    Returns:
        [`ReleaseSources`]
    """
    work_dir = Path(work_dir)
    common = {"cache_dir": cache_dir, "token": token, "local_files_only": local_files_only}
    commits: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    views = {name: work_dir / name for name in ("tokenizer", "llm", "unclip")}
    for view in views.values():
        view.mkdir(parents=True, exist_ok=True)

    # SEED tokenizer checkpoint (+ the text tokenizer the release keeps next to it)
    tokenizer_kwargs = {**common, "revision": revision_tokenizer}
    files[tokenizer_repo] = _fetch_into(
        tokenizer_repo,
        "tokenizer_repo",
        [QUANTIZER_FILE, *TEXT_TOKENIZER_FILES],
        views["tokenizer"],
        tokenizer_kwargs,
        commits,
    )
    if QUANTIZER_FILE not in files[tokenizer_repo]:
        raise ReleaseConversionError(
            f"{tokenizer_repo} ({argument_label('tokenizer_repo')}) has no {QUANTIZER_FILE}: not a SEED tokenizer release"
        )

    # SEED-LLaMA: config, text tokenizer if any, safetensors weights, else the .bin shards
    llm_kwargs = {**common, "revision": revision_llm}
    llm_files = _fetch_into(
        llm_repo,
        "llm_repo",
        [*LLM_CONFIG_FILES, *TEXT_TOKENIZER_FILES, *LLM_SAFETENSORS],
        views["llm"],
        llm_kwargs,
        commits,
    )
    if "config.json" not in llm_files:
        raise ReleaseConversionError(f"{llm_repo} ({argument_label('llm_repo')}) has no config.json")
    if not any(name.endswith(".safetensors") for name in llm_files):
        llm_files += _fetch_into(llm_repo, "llm_repo", list(LLM_BIN), views["llm"], llm_kwargs, commits)
    if not any(name.endswith((".safetensors", ".bin")) for name in llm_files):
        raise ReleaseConversionError(
            f"{llm_repo} ({argument_label('llm_repo')}) has no weights: expected model*.safetensors or "
            "pytorch_model*.bin"
        )
    text_tokenizer_repo = llm_repo
    if not any(name in TEXT_VOCABULARY_FILES for name in llm_files):
        # the -sft release keeps the text tokenizer (with the image tokens) in the tokenizer repo; stray tokenizer
        # files of the LLM repo without a vocabulary are not mixed with it
        for name in [name for name in llm_files if name in TEXT_TOKENIZER_FILES]:
            (views["llm"] / name).unlink()
            llm_files.remove(name)
        tokenizer_files = [name for name in files[tokenizer_repo] if name in TEXT_TOKENIZER_FILES]
        if not any(name in TEXT_VOCABULARY_FILES for name in tokenizer_files):
            raise ReleaseConversionError(
                f"neither {llm_repo} ({argument_label('llm_repo')}) nor {tokenizer_repo} ({argument_label('tokenizer_repo')}) "
                f"has a text tokenizer ({', '.join(TEXT_TOKENIZER_FILES)})"
            )
        for name in tokenizer_files:
            _link(views["tokenizer"] / name, views["llm"] / name)
        text_tokenizer_repo = tokenizer_repo
    _patch_tokenizer_class(views["llm"])
    files[llm_repo] = sorted(llm_files)

    # unCLIP: configs, then one weight format per component (safetensors first)
    unclip_kwargs = {**common, "revision": revision_unclip}
    weighted = {name: stems for name, stems in UNCLIP_COMPONENTS.items() if stems is not None}
    patterns = list(UNCLIP_CONFIG_FILES)
    for component, (safetensors_stem, _) in weighted.items():
        patterns += _weight_patterns(component, safetensors_stem, "safetensors", unclip_variant)
    unclip_files = _fetch_into(unclip_repo, "unclip_repo", patterns, views["unclip"], unclip_kwargs, commits)

    def without_weights() -> list[str]:
        return [
            component
            for component in weighted
            if not any(
                name.startswith(f"{component}/") and name.endswith((".safetensors", ".bin"))
                for name in unclip_files
            )
        ]

    if missing := without_weights():
        patterns = [
            pattern
            for component in missing
            for pattern in _weight_patterns(component, weighted[component][1], "bin", unclip_variant)
        ]
        unclip_files += _fetch_into(
            unclip_repo, "unclip_repo", patterns, views["unclip"], unclip_kwargs, commits
        )
    absent = [
        name
        for name in ("model_index.json", *(f"{c}/config.json" for c in weighted))
        if name not in unclip_files
    ]
    if missing := without_weights():
        absent += [f"{component}/ weights" for component in missing]
    if absent:
        variant = f" (variant {unclip_variant!r})" if unclip_variant else ""
        raise ReleaseConversionError(
            f"{unclip_repo} ({argument_label('unclip_repo')}) is not a stable-diffusion-2-1-unclip layout{variant}: "
            f"missing {', '.join(absent)}"
        )
    files[unclip_repo] = sorted(unclip_files)
    for repo_id, names in files.items():
        logger.info("%s@%s: %s", repo_id, commits.get(repo_id), ", ".join(names))
    return ReleaseSources(
        tokenizer_dir=views["tokenizer"],
        llm_dir=views["llm"],
        unclip_dir=views["unclip"],
        files=files,
        commits=commits,
        text_tokenizer_repo=text_tokenizer_repo,
    )


def _patch_tokenizer_class(folder: Path) -> None:
    """The authors' tokenizer_config.json may name their `SeedLlamaTokenizer` (a `LlamaTokenizer` subclass that
    also loads the image models); the view gets a copy naming `LlamaTokenizer`."""
    path = folder / "tokenizer_config.json"
    if not path.exists():
        return
    config = json.loads(path.read_text())
    replacement = _AUTHOR_TOKENIZER_CLASSES.get(config.get("tokenizer_class"))
    if replacement is None:
        return
    config["tokenizer_class"] = replacement
    path.unlink()
    path.write_text(json.dumps(config, indent=2))


__all__ = ["ReleaseConversionError", "ReleaseSources", "argument_label", "fetch_release"]
