"""SEED system checkpoints: one folder (or Hub repo) with SEED-LLaMA and its processor at the top, the visual
tokenizer in `visual_tokenizer/` and the unCLIP de-tokenizer in `detokenizer/`, each with its remote code."""

from __future__ import annotations

import json
import os
from pathlib import Path

from seed_hf.io_utils import staged_directory
from seed_hf.modeling.checkpoint_components import copy_code_files

VISUAL_TOKENIZER_FOLDER = "visual_tokenizer"
DETOKENIZER_FOLDER = "detokenizer"


def save_seed_checkpoint(
    folder: str | os.PathLike,
    model,
    processor,
    visual_tokenizer,
    detokenizer,
    *,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    **push_kwargs,
) -> Path:
    """
    Write a complete SEED checkpoint folder that `pipeline("seed-text-to-image", model=folder)` and
    `pipeline("seed-image-to-text", model=folder)` load on their own:

    - `folder/`: the SEED-LLaMA model and its processor, with `config.visual_tokenizer_name_or_path =
      "visual_tokenizer"` and `config.detokenizer_name_or_path = "detokenizer"` (set on `model.config`);
    - `folder/visual_tokenizer/`: the SEED tokenizer;
    - `folder/detokenizer/`: the unCLIP de-tokenizer ([`SeedUnCLIPPipeline`]) without its `seed_tokenizer`, which
      is the visual tokenizer above (stored once, attached on loading).

    Every folder also carries its remote code (see [`write_remote_code`]): `auto_map` entries, the package's
    modeling, processing and pipeline files and the two tasks as `custom_pipelines`, so that the folder (or its
    Hub repo) loads with `trust_remote_code=True` where seed-hf is not installed.

    The folder is written to a temporary sibling and renamed into place when complete.

    Args:
        folder (`str` or `os.PathLike`): where to write (replaced if it exists).
        model ([`SeedLlamaForCausalLM`]), processor ([`SeedLlamaProcessor`]): the LLM side.
        visual_tokenizer ([`SeedTokenizerModel`]): the SEED tokenizer.
        detokenizer ([`SeedUnCLIPPipeline`]): the de-tokenizer (its own `seed_tokenizer`, if any, is not saved).
        push_to_hub (`bool`, *optional*, defaults to `False`): upload the written folder to the Hub as one commit
            with [`~seed_hf.push.push_folder`].
        repo_id (`str`, *optional*): the Hub repo to push to; defaults to the folder's name.
        push_kwargs: passed on to [`~seed_hf.push.push_folder`] (`private`, `revision`, `commit_message`,
            `token`, `repo_type`, `api`).
    """
    config = model.config
    visual_config = visual_tokenizer.config
    mismatches = [
        f"{what}: {ours} != {theirs}"
        for what, ours, theirs in (
            (
                "visual_tokenizer.config.num_codes vs model.config.num_image_codes",
                visual_config.num_codes,
                config.num_image_codes,
            ),
            (
                "visual_tokenizer.config.num_query_tokens vs model.config.tokens_per_image",
                visual_config.num_query_tokens,
                config.tokens_per_image,
            ),
            (
                "visual_tokenizer.config.generation_embedding_dim vs detokenizer.embedding_dim",
                visual_config.generation_embedding_dim,
                detokenizer.embedding_dim,
            ),
        )
        if ours != theirs
    ]
    if mismatches:
        raise ValueError("the checkpoint parts do not fit together: " + "; ".join(mismatches))
    config.visual_tokenizer_name_or_path = VISUAL_TOKENIZER_FOLDER
    config.detokenizer_name_or_path = DETOKENIZER_FOLDER
    detokenizer_parts = {
        name: module for name, module in detokenizer.components.items() if name != "seed_tokenizer"
    }
    with staged_directory(folder) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        visual_tokenizer.save_pretrained(staging / VISUAL_TOKENIZER_FOLDER)
        processor.image_processor.save_pretrained(staging / VISUAL_TOKENIZER_FOLDER)
        type(detokenizer)(
            seed_tokenizer=None,
            seed_tokenizer_name_or_path=f"../{VISUAL_TOKENIZER_FOLDER}",
            **detokenizer_parts,
            **_detokenizer_settings(detokenizer),
        ).save_pretrained(staging / DETOKENIZER_FOLDER)
        write_remote_code(staging)
    if push_to_hub:
        from seed_hf.push import push_folder

        push_folder(folder, repo_id or Path(folder).resolve().name, **push_kwargs)
    return Path(folder)


def _detokenizer_settings(detokenizer) -> dict:
    config = detokenizer.config
    return {
        key: config[key]
        for key in ("default_num_inference_steps", "default_guidance_scale")
        if config.get(key) is not None
    }


def write_remote_code(folder: str | os.PathLike) -> None:
    """
    Add the pipeline tasks to a saved SEED-LLaMA folder as transformers' `custom_pipelines` (the pipeline file and
    the modeling files it imports are copied beside `config.json`), so that `pipeline(task, model=folder_or_repo,
    trust_remote_code=True)` works without seed-hf. The models, processors and the de-tokenizer write their own
    code and `auto_map` entries when saved (`register_for_auto_class`, [`SeedUnCLIPPipeline.save_pretrained`]).
    """
    from importlib import import_module

    from seed_hf._registration import PIPELINE_TASKS  # the tasks seed-hf registers, by class path

    folder = Path(folder)
    custom_pipelines = {}
    for task, class_path in PIPELINE_TASKS.items():
        module_name, _, class_name = class_path.rpartition(".")
        module_file = import_module(module_name).__file__
        copy_code_files(module_file, folder)
        custom_pipelines[task] = {
            "impl": f"{Path(module_file).stem}.{class_name}",
            "pt": ["AutoModelForCausalLM"],
            "tf": [],
            "type": "multimodal",
        }
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["custom_pipelines"] = custom_pipelines
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def refresh_remote_code(folder: str | os.PathLike) -> list[Path]:
    """
    Rewrite the code files of a saved folder (a SEED system or any of its parts) from this package's sources, e.g.
    after upgrading seed-hf, adding the files they now import; returns the files written. Only folders that hold
    code already are touched.
    """
    import seed_hf.modeling
    import seed_hf.pipelines
    from seed_hf.modeling.checkpoint_components import code_files

    sources = {
        path.name: path
        for package in (seed_hf.modeling, seed_hf.pipelines)
        for path in Path(package.__file__).parent.glob("*.py")
        if path.name != "__init__.py"
    }
    written = []
    for code_folder in sorted({path.parent for path in Path(folder).rglob("*.py")}):
        needed = {
            source.name: source
            for present in code_folder.glob("*.py")
            if present.name in sources
            for source in code_files(sources[present.name])
        }
        for name, source in sorted(needed.items()):
            target = code_folder / name
            if not target.is_file() or target.read_bytes() != source.read_bytes():
                target.write_bytes(source.read_bytes())
                written.append(target)
    return written


__all__ = [
    "DETOKENIZER_FOLDER",
    "VISUAL_TOKENIZER_FOLDER",
    "refresh_remote_code",
    "save_seed_checkpoint",
    "write_remote_code",
]
