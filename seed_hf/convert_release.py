"""One-step conversion of the official SEED release into one complete SEED system folder.

`seed-hf convert-release --output-dir DIR` fetches only the files it needs from the three release repos, converts
them with the project's converters and writes the folder that `AutoModel`, `AutoProcessor` and the SEED pipelines
load (LLM and processor at the top, `visual_tokenizer/`, `detokenizer/`, model cards):

- `AILab-CVC/seed-tokenizer-2`: the authors' `seed_quantizer.pt` (-> [`~seed_hf.convert`]) and the SEED-LLaMA text
  tokenizer (`tokenizer.model`, `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`), which the
  LLM repos of the `-sft` release do not carry;
- `AILab-CVC/seed-llama-8b-sft` (or a sibling): `config.json`, `generation_config.json` and the weights,
  safetensors when the repo has them, else the `pytorch_model*.bin` shards of the release (->
  [`~seed_hf.convert_llama`]);
- `stabilityai/stable-diffusion-2-1-unclip`: the diffusers components the de-tokenizer keeps (`unet/`, `vae/`,
  `text_encoder/`, `tokenizer/`, `scheduler/`, `image_normalizer/`, `image_noising_scheduler/`, `model_index.json`),
  one weight format; never the CLIP `image_encoder/` or `feature_extractor/`, which the SEED tokenizer replaces.

Whatever a snapshot folder holds besides the selected files (earlier downloads, an offline cache of the whole repo)
is never read: the converters work on a view of the selected files only. The result is checked before it is put in
place (the LLM answers a prompt with an image, the de-tokenizer draws), and the parity evidence gathered on the way
goes into the model card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.utils import filter_repo_objects, validate_repo_id
from tqdm.auto import tqdm

from seed_hf.io_utils import staged_directory
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
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHAT_TEMPLATES = ("vicuna", "llama2")
STEPS = ("fetch", "convert tokenizer", "convert LLM", "assemble de-tokenizer", "save", "check", "cards")
# Tiny de-tokenizer check: denoising steps.
CHECK_INFERENCE_STEPS = 2
# Bound on the LLM logits change when the weights keep their dtype (the conversion copies them).
LLM_PARITY_TOLERANCE = 1e-4
LLM_PARITY_KEY = "LLM logits, release LLaMA vs converted SEED-LLaMA (max-abs)"

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


def _argument(name: str) -> str:
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
            f"cannot fetch {repo_id} ({_argument(argument)}): {type(error).__name__}: {error}"
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
            f"{tokenizer_repo} ({_argument('tokenizer_repo')}) has no {QUANTIZER_FILE}: not a SEED tokenizer release"
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
        raise ReleaseConversionError(f"{llm_repo} ({_argument('llm_repo')}) has no config.json")
    if not any(name.endswith(".safetensors") for name in llm_files):
        llm_files += _fetch_into(llm_repo, "llm_repo", list(LLM_BIN), views["llm"], llm_kwargs, commits)
    if not any(name.endswith((".safetensors", ".bin")) for name in llm_files):
        raise ReleaseConversionError(
            f"{llm_repo} ({_argument('llm_repo')}) has no weights: expected model*.safetensors or "
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
                f"neither {llm_repo} ({_argument('llm_repo')}) nor {tokenizer_repo} ({_argument('tokenizer_repo')}) "
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
            f"{unclip_repo} ({_argument('unclip_repo')}) is not a stable-diffusion-2-1-unclip layout{variant}: "
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _release_chat_template(llm_repo: str) -> str:
    # SEED-LLaMA-14B is fine-tuned from LLaMA-2-chat ([INST] ... [/INST]); 8B from Vicuna (USER: ... ASSISTANT:)
    return "llama2" if "14b" in llm_repo.lower() else "vicuna"


def _check_image(size: int):
    """A deterministic RGB test card (gradients and a square), `size` x `size`."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(
        (np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 96.0)), axis=-1
    )
    quarter = max(size // 4, 1)
    pixels[quarter : 3 * quarter, quarter : 3 * quarter] = (230.0, 40.0, 40.0)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def _tokenizer_parity(model, reference: Path) -> dict[str, str]:
    """Codes and generation embeddings of the converted tokenizer on the authors' reference inputs/outputs."""
    from safetensors.torch import load_file

    inputs = load_file(str(reference / "inputs.safetensors"))
    expected = load_file(str(reference / "expected.safetensors"))
    with torch.no_grad():
        output = model(inputs["pixel_values"].to(model.dtype), return_generation_embeddings=True)
    codes = output.image_codes.cpu()
    if codes.shape != expected["codes"].shape:
        raise ReleaseConversionError(
            f"the converted SEED tokenizer gives codes of shape {tuple(codes.shape)} on {_argument('tokenizer_reference')}, "
            f"the reference {tuple(expected['codes'].shape)}"
        )
    equal = int((codes == expected["codes"]).sum())
    if equal != codes.numel():
        raise ReleaseConversionError(
            f"the converted SEED tokenizer reproduces {equal} of {codes.numel()} reference codes "
            f"({_argument('tokenizer_reference')}): the conversion does not match the authors' model"
        )
    parity = {
        "tokenizer codes vs the authors' reference outputs": f"{equal}/{codes.numel()} codes identical to the authors' reference outputs "
        f"({codes.shape[0]} images, {reference.name})"
    }
    if "generation_embeds_from_codes" in expected:
        difference = (
            output.generation_embeddings.float().cpu() - expected["generation_embeds_from_codes"]
        ).abs()
        parity["tokenizer generation embeddings vs the authors' reference (max-abs)"] = (
            f"{difference.max().item():.3g}"
        )
    return parity


def _parity_prompt_ids(tokenizer, num_codes: int, tokens_per_image: int) -> torch.LongTensor:
    """Ids of a prompt holding text and one image (`<img>` + codes + `</img>`), read with the release tokenizer."""
    codes = "".join(f"<img_{(7 * i + 3) % num_codes:05d}>" for i in range(tokens_per_image))
    text = f"USER: What is in this picture? <img>{codes}</img> ASSISTANT: A small test card."
    return tokenizer(text, return_tensors="pt").input_ids


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"{_argument('dtype')} must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"{_argument('dtype')} must be one of {', '.join(DTYPES)} or 'auto', got {dtype!r}")
    return DTYPES[dtype]


def _validate_repo(name: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{_argument(name)} must be a Hub repo id like 'org/name', got {value!r}")
    try:
        validate_repo_id(value)
    except ValueError as error:
        raise ValueError(f"{_argument(name)} is not a valid Hub repo id: {error}") from error


def convert_release(
    output_dir: str | os.PathLike,
    *,
    tokenizer_repo: str = RELEASE_TOKENIZER_REPO,
    llm_repo: str = RELEASE_LLM_REPO,
    unclip_repo: str = RELEASE_UNCLIP_REPO,
    revision_tokenizer: str | None = None,
    revision_llm: str | None = None,
    revision_unclip: str | None = None,
    dtype: str | torch.dtype | None = None,
    chat_template: str | None = None,
    tokenizer_config=None,
    tokenizer_reference: str | os.PathLike | None = None,
    unclip_variant: str | None = None,
    check_llm_parity: bool = True,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
) -> Path:
    """
    Convert the official SEED release (SEED tokenizer, SEED-LLaMA, unCLIP Stable Diffusion) into one SEED system
    folder: the LLM and its processor at the top, `visual_tokenizer/`, `detokenizer/` and the model cards.

    Steps (with a progress bar): fetch only the needed files ([`fetch_release`]); convert the authors'
    `seed_quantizer.pt` ([`~seed_hf.convert.convert_seed_tokenizer`]); convert the LLM
    ([`~seed_hf.convert_llama.convert_seed_llama`]); assemble the de-tokenizer
    ([`SeedUnCLIPPipeline.from_unclip`]); save ([`save_seed_checkpoint`]); check that the folder loads
    (`AutoModel` + `AutoProcessor` answer a prompt with an image, the de-tokenizer draws one image from codes in
    2 steps); write the cards with the parity evidence (`seed_hf.model_cards.write_converted_cards`). Everything is
    written to a temporary sibling of `output_dir` and renamed into place only when the check passed; then, with
    `push_to_hub`, the folder is uploaded as one commit (`seed_hf.push.push_folder`).

    Args:
        output_dir (`str` or `os.PathLike`): the SEED system folder to write.
        tokenizer_repo (`str`, *optional*, defaults to `"AILab-CVC/seed-tokenizer-2"`): repo with `seed_quantizer.pt`.
        llm_repo (`str`, *optional*, defaults to `"AILab-CVC/seed-llama-8b-sft"`): the SEED-LLaMA repo.
        unclip_repo (`str`, *optional*, defaults to `"stabilityai/stable-diffusion-2-1-unclip"`): the unCLIP pipeline.
        revision_tokenizer, revision_llm, revision_unclip (`str`, *optional*): branch, tag or commit of each repo.
        dtype (`str` or `torch.dtype`, *optional*): `"float32"`, `"float16"` or `"bfloat16"` for every part; by
            default each part keeps the dtype it is stored in (the SEED tokenizer and SEED-LLaMA release: float32).
        chat_template (`str`, *optional*): the processor's default chat template, `"vicuna"` or `"llama2"`; by
            default `"llama2"` for a 14B repo name, else `"vicuna"`.
        tokenizer_config (`SeedTokenizerConfig`, `dict` or path, *optional*): what tensor shapes cannot reveal
            (head counts, eps), a config or a JSON file in the reference schema; default: the release's values.
        tokenizer_reference (`str` or `os.PathLike`, *optional*): a folder with the authors' reference
            `inputs.safetensors` and `expected.safetensors`; the converted tokenizer must reproduce the codes.
        unclip_variant (`str`, *optional*): unCLIP weight variant to fetch and load (e.g. `"fp16"`).
        check_llm_parity (`bool`, *optional*, defaults to `True`): compare the logits of the release LLaMA and of
            the converted model on a prompt with an image (loads the release model once more).
        cache_dir (`str` or `os.PathLike`, *optional*), token (`str` or `bool`, *optional*),
        local_files_only (`bool`, *optional*, defaults to `False`): passed to `snapshot_download`.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_dir`.
        push_to_hub (`str`, *optional*): a Hub repo id to upload the folder to once written.
        private (`bool`, *optional*): with `push_to_hub`, create the repo private (`None`: the namespace default).

    Returns:
        `Path`: `output_dir`.

    Raises:
        `ValueError`: an argument is invalid (the message names it); [`ReleaseConversionError`] (a `ValueError`)
        when a repo cannot be fetched or lacks a file, or when the converted folder fails its check.
    """
    for name, value in (
        ("tokenizer_repo", tokenizer_repo),
        ("llm_repo", llm_repo),
        ("unclip_repo", unclip_repo),
    ):
        _validate_repo(name, value)
    if push_to_hub is not None:
        _validate_repo("push_to_hub", push_to_hub)
    torch_dtype = _resolve_dtype(dtype)
    chat_template = chat_template or _release_chat_template(llm_repo)
    if chat_template not in CHAT_TEMPLATES:
        raise ValueError(
            f"{_argument('chat_template')} must be one of {', '.join(CHAT_TEMPLATES)}, got {chat_template!r}"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"{_argument('output_dir')} {output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"{_argument('output_dir')} {output_dir} exists; pass overwrite=True (--overwrite) to replace it"
        )
    if isinstance(tokenizer_config, (str, os.PathLike)):
        path = Path(tokenizer_config)
        if not path.is_file():
            raise ValueError(f"{_argument('tokenizer_config')} {path} is not a file")
        tokenizer_config = json.loads(path.read_text())
    if tokenizer_reference is not None:
        tokenizer_reference = Path(tokenizer_reference)
        absent = [
            n
            for n in ("inputs.safetensors", "expected.safetensors")
            if not (tokenizer_reference / n).is_file()
        ]
        if absent:
            raise ValueError(
                f"{_argument('tokenizer_reference')} {tokenizer_reference} lacks {', '.join(absent)}"
            )

    from transformers import AutoTokenizer, LlamaForCausalLM

    import seed_hf  # noqa: F401  (registers the Auto classes)
    from seed_hf.checkpoint import save_seed_checkpoint
    from seed_hf.convert import convert_seed_tokenizer
    from seed_hf.convert_llama import convert_seed_llama
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
    from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    steps = [*STEPS, "push"] if push_to_hub else list(STEPS)
    with tqdm(total=len(steps), desc="convert-release", unit="step") as progress:
        parity: dict[str, str] = {}

        def step(name: str) -> None:
            progress.set_postfix_str(name)
            logger.info("convert-release: %s", name)

        output_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{output_dir.name}.work.", dir=output_dir.parent) as work:
            work = Path(work)
            step("fetch")
            sources = fetch_release(
                work / "sources",
                tokenizer_repo=tokenizer_repo,
                llm_repo=llm_repo,
                unclip_repo=unclip_repo,
                revision_tokenizer=revision_tokenizer,
                revision_llm=revision_llm,
                revision_unclip=revision_unclip,
                unclip_variant=unclip_variant,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
            )
            progress.update()

            step("convert tokenizer")
            visual_tokenizer = convert_seed_tokenizer(
                sources.tokenizer_dir / QUANTIZER_FILE, work / "visual_tokenizer", config=tokenizer_config
            )
            parity["tokenizer conversion"] = (
                f"{QUANTIZER_FILE} loaded strictly: every checkpoint tensor mapped once, every parameter filled "
                f"({visual_tokenizer.num_parameters():,} parameters)"
            )
            if tokenizer_reference is not None:
                parity.update(_tokenizer_parity(visual_tokenizer, tokenizer_reference))
            if torch_dtype is not None:
                visual_tokenizer = visual_tokenizer.to(torch_dtype)
            progress.update()

            step("convert LLM")
            try:
                text_tokenizer = AutoTokenizer.from_pretrained(sources.llm_dir)
            except Exception as error:  # e.g. a sentencepiece tokenizer.model without its converter installed
                raise ReleaseConversionError(
                    f"cannot load the SEED-LLaMA text tokenizer of {sources.text_tokenizer_repo}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            parity_ids = _parity_prompt_ids(
                text_tokenizer, visual_tokenizer.config.num_codes, visual_tokenizer.config.num_query_tokens
            )
            reference_logits = None
            if check_llm_parity:
                reference = LlamaForCausalLM.from_pretrained(sources.llm_dir, dtype="auto").eval()
                reference_dtype = reference.dtype
                with torch.no_grad():
                    reference_logits = reference(parity_ids).logits.float()
                del reference
            convert_seed_llama(
                sources.llm_dir,
                work / "llm",
                chat_template=chat_template,
                num_image_codes=visual_tokenizer.config.num_codes,
                tokens_per_image=visual_tokenizer.config.num_query_tokens,
            )
            model = SeedLlamaForCausalLM.from_pretrained(work / "llm", dtype=torch_dtype or "auto").eval()
            model_dtype = model.dtype
            processor = SeedLlamaProcessor.from_pretrained(work / "llm")
            # the LLM's image processor feeds the visual tokenizer: same size and normalisation
            size = visual_tokenizer.config.image_size
            processor.image_processor = SeedImageProcessor(
                size={"height": size, "width": size},
                image_mean=list(visual_tokenizer.config.image_mean),
                image_std=list(visual_tokenizer.config.image_std),
            )
            progress.update()

            step("assemble de-tokenizer")
            unclip_kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
            if unclip_variant:
                unclip_kwargs["variant"] = unclip_variant
            detokenizer = SeedUnCLIPPipeline.from_unclip(
                sources.unclip_dir, visual_tokenizer, **unclip_kwargs
            )
            progress.update()

            step("save")
            # built under its final name inside the work folder; moved into place once checked and carded
            built = work / "system" / output_dir.name
            built.parent.mkdir()
            save_seed_checkpoint(built, model, processor, visual_tokenizer, detokenizer)
            del model, detokenizer
            progress.update()

            step("check")
            # the weights keep their values when they keep their dtype: then the logits must agree
            strict = reference_logits is not None and reference_dtype == model_dtype
            parity.update(_check_folder(built, parity_ids, reference_logits, strict_llm_parity=strict))
            if reference_logits is not None:
                parity[LLM_PARITY_KEY] += (
                    f"; release {_dtype_name(reference_dtype)}, converted {_dtype_name(model_dtype)}"
                )
            progress.update()

            step("cards")
            from seed_hf.model_cards import write_converted_cards

            write_converted_cards(
                built,
                tokenizer_repo=tokenizer_repo,
                llm_repo=llm_repo,
                unclip_repo=unclip_repo,
                parity=parity,
                repo_id=push_to_hub,
            )
            with staged_directory(output_dir) as staging:  # replaces an existing output_dir only now
                staging.rmdir()
                built.rename(staging)
            progress.update()

        if push_to_hub:
            step("push")
            from seed_hf.push import push_folder

            push_folder(
                output_dir, push_to_hub, private=private, token=token if isinstance(token, str) else None
            )
            progress.update()
    return output_dir


def _check_folder(
    folder: Path,
    parity_ids: torch.LongTensor,
    reference_logits: torch.Tensor | None,
    *,
    strict_llm_parity: bool,
) -> dict[str, str]:
    """Load the written folder the way users will and exercise every part; return the evidence."""
    from transformers import AutoModel, AutoProcessor

    from seed_hf.checkpoint import DETOKENIZER_FOLDER, VISUAL_TOKENIZER_FOLDER
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    evidence: dict[str, str] = {}
    try:
        model = AutoModel.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
        visual_tokenizer = AutoModel.from_pretrained(folder / VISUAL_TOKENIZER_FOLDER).eval()
    except Exception as error:
        raise ReleaseConversionError(
            f"the converted folder does not load: {type(error).__name__}: {error}"
        ) from error
    if (
        type(model).__name__ != "SeedLlamaForCausalLM"
        or type(visual_tokenizer).__name__ != "SeedTokenizerModel"
    ):
        raise ReleaseConversionError(
            f"the converted folder loads as {type(model).__name__} + {type(visual_tokenizer).__name__}, expected "
            "SeedLlamaForCausalLM + SeedTokenizerModel"
        )

    # the LLM reads a prompt with an image (pixels -> codes through the visual tokenizer)
    image = _check_image(visual_tokenizer.config.image_size)
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is in this picture?"},
            ],
        }
    ]
    try:
        inputs = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            logits = model(**inputs).logits
            codes = visual_tokenizer.encode(inputs["pixel_values"].to(visual_tokenizer.dtype))
    except Exception as error:
        raise ReleaseConversionError(
            f"the converted LLM fails on a prompt with an image: {type(error).__name__}: {error}"
        ) from error
    if not torch.isfinite(logits).all():
        raise ReleaseConversionError("the converted LLM gives non-finite logits on a prompt with an image")
    evidence["LLM on a prompt with an image"] = (
        f"processor chat template with one image -> {inputs['input_ids'].shape[1]} tokens, finite logits"
    )

    if reference_logits is not None:
        with torch.no_grad():
            converted = model(parity_ids).logits.float()
        difference = (converted - reference_logits).abs().max().item()
        if strict_llm_parity and difference > LLM_PARITY_TOLERANCE:
            raise ReleaseConversionError(
                f"the converted LLM's logits differ from the release LLaMA's by {difference:.3g} (max-abs) on the "
                f"same ids; the conversion must keep the weights"
            )
        evidence[LLM_PARITY_KEY] = f"{difference:.3g} on {parity_ids.shape[1]} tokens (text and one image)"
    del model

    # the de-tokenizer draws the check image's codes
    try:
        detokenizer = SeedUnCLIPPipeline.from_pretrained(
            folder / DETOKENIZER_FOLDER, seed_tokenizer=visual_tokenizer, dtype=visual_tokenizer.dtype
        )
        detokenizer.set_progress_bar_config(disable=True)
        # smallest size the VAE and the UNet's down-sampling accept
        side = detokenizer.vae_scale_factor * 2 ** (len(detokenizer.unet.config.block_out_channels) - 1)
        drawn = detokenizer(
            image_codes=codes,
            num_inference_steps=CHECK_INFERENCE_STEPS,
            height=side,
            width=side,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images
    except Exception as error:
        raise ReleaseConversionError(
            f"the converted de-tokenizer fails to draw: {type(error).__name__}: {error}"
        ) from error
    if drawn.shape[0] != 1 or not bool(torch.isfinite(torch.as_tensor(drawn)).all()):
        raise ReleaseConversionError(f"the converted de-tokenizer drew {drawn.shape} with non-finite values")
    evidence["de-tokenizer drawing from codes"] = (
        f"1 image of {side}x{side} from {codes.shape[1]} codes in {CHECK_INFERENCE_STEPS} steps, finite"
    )
    return evidence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seed-hf convert-release",
        description="Convert the official SEED release (SEED tokenizer, SEED-LLaMA, unCLIP Stable Diffusion) into one "
        "complete SEED system folder: fetch only the needed files, convert, check that it loads, write the cards.",
    )
    parser.add_argument(
        "--tokenizer", default=RELEASE_TOKENIZER_REPO, help="Hub repo with the authors' seed_quantizer.pt"
    )
    parser.add_argument("--llm", default=RELEASE_LLM_REPO, help="Hub repo of the SEED-LLaMA checkpoint")
    parser.add_argument(
        "--unclip", default=RELEASE_UNCLIP_REPO, help="Hub repo of the unCLIP Stable Diffusion pipeline"
    )
    parser.add_argument("--output-dir", required=True, help="the SEED system folder to write")
    parser.add_argument("--revision-tokenizer", help="branch, tag or commit of --tokenizer")
    parser.add_argument("--revision-llm", help="branch, tag or commit of --llm")
    parser.add_argument("--revision-unclip", help="branch, tag or commit of --unclip")
    parser.add_argument(
        "--dtype",
        choices=[*DTYPES, "auto"],
        default="auto",
        help="dtype of every part; auto: keep each part's stored dtype (float32 in the SEED release)",
    )
    parser.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATES,
        help="default chat template; by default llama2 for a 14B repo name, vicuna otherwise",
    )
    parser.add_argument(
        "--tokenizer-config",
        help="JSON in the reference schema with what shapes cannot reveal (head counts, eps); default: the release's",
    )
    parser.add_argument(
        "--tokenizer-reference",
        help="folder with the authors' inputs.safetensors + expected.safetensors; the converted codes must match",
    )
    parser.add_argument("--unclip-variant", help="unCLIP weight variant to fetch and load, e.g. fp16")
    parser.add_argument(
        "--skip-llm-parity",
        action="store_true",
        help="do not compare the release and converted LLM logits (saves loading the release model once more)",
    )
    parser.add_argument("--cache-dir", help="Hugging Face cache folder (default: the standard cache)")
    parser.add_argument("--token", help="Hub token (default: the stored login)")
    parser.add_argument(
        "--local-files-only", action="store_true", help="use the cache only, never the network"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output-dir if it exists")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="then upload the folder to this Hub repo as one commit"
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    args = parser.parse_args(argv)
    try:
        folder = convert_release(
            args.output_dir,
            tokenizer_repo=args.tokenizer,
            llm_repo=args.llm,
            unclip_repo=args.unclip,
            revision_tokenizer=args.revision_tokenizer,
            revision_llm=args.revision_llm,
            revision_unclip=args.revision_unclip,
            dtype=args.dtype,
            chat_template=args.chat_template,
            tokenizer_config=args.tokenizer_config,
            tokenizer_reference=args.tokenizer_reference,
            unclip_variant=args.unclip_variant,
            check_llm_parity=not args.skip_llm_parity,
            cache_dir=args.cache_dir,
            token=args.token,
            local_files_only=args.local_files_only,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
            private=args.private or None,
        )
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"seed-hf convert-release: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {folder}")
    return 0


__all__ = ["ReleaseConversionError", "ReleaseSources", "convert_release", "fetch_release"]
