"""`seed-hf space`: write a Hugging Face Space folder serving the SEED chat demo (`seed_hf.demo`) for a model.

The folder holds `app.py` (builds the demo for the model and launches it), `requirements.txt` (seed-hf's own
dependencies and Gradio, pinned to the installed versions), `README.md` with the Space front matter, and a copy
of the installed `seed_hf` package sources (seed-hf is not on PyPI), so that it runs as uploaded:

```bash
seed-hf space user/seed-shapes space/ && seed-hf push space/ user/seed-shapes-demo --repo-type space
```

`python app.py` in the folder serves the demo locally too (offline on a local model folder or a warm cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
from importlib import metadata, util
from pathlib import Path

# the installed seed-hf packages copied into a Space (their sources and data files, see pyproject.toml)
PACKAGES = ("seed_hf", "seed_hf.model_cards", "seed_hf.modeling", "seed_hf.pipelines", "seed_hf.training")
PACKAGE_FILE_PATTERNS = ("*.py", "*.md", "recipes/*.yaml")

APP_TEMPLATE = '''"""SEED-LLaMA chat demo (written by `seed-hf space`): read, draw and edit images as 32 SEED codes."""

import os

from seed_hf.demo import build_demo

demo = build_demo(os.environ.get("SEED_HF_MODEL", {model!r}))

if __name__ == "__main__":
    # Spaces (and `python app.py`) set the address and port through GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
    demo.launch()
'''

README_TEMPLATE = """---
{front_matter}---

# {title}

A chat with SEED-LLaMA{model_line}: upload images and ask about them, ask for a drawing, ask to change it.
Every image is kept as its 32 discrete SEED codes; "See the tokens" shows them and their reconstruction.

Written by `seed-hf space`; run it locally with `pip install -r requirements.txt && python app.py`.
"""


def _requirements() -> list[str]:
    """seed-hf's dependencies (without extras) and Gradio, pinned to what is installed here."""
    from packaging.requirements import Requirement

    requirements = [Requirement(text) for text in metadata.requires("seed-hf") or []]
    names = ["gradio", *(requirement.name for requirement in requirements if requirement.marker is None)]
    # a local version label (torch's "+cpu") names a build that PyPI does not serve
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in dict.fromkeys(names)]


def _copy_package_sources(out_dir: Path) -> None:
    for package in PACKAGES:
        source = Path(next(iter(util.find_spec(package).submodule_search_locations)))
        target = out_dir.joinpath(*package.split("."))
        for pattern in PACKAGE_FILE_PATTERNS:
            for path in source.glob(pattern):
                destination = target / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)


def write_space(model: str | os.PathLike, out_dir: str | os.PathLike, title: str = "SEED-LLaMA chat") -> Path:
    """
    Write a Space folder serving the SEED chat demo for `model`.

    Args:
        model (`str` or `os.PathLike`): a Hub repo id (named in the front matter's `models`) or a local SEED
            checkpoint folder (written into `app.py` as an absolute path: for local serving only).
        out_dir (`str` or `os.PathLike`): the folder to write; created if missing, must be empty if present.
        title (`str`, *optional*): the Space's title.

    Returns:
        `Path`: `out_dir`.
    """
    import gradio
    import yaml

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"`out_dir` must be a new or empty folder, got {str(out_dir)!r}")
    local = Path(model).is_dir()
    if local and not (Path(model) / "config.json").is_file():
        raise ValueError(
            f"`model` must be a SEED checkpoint folder (config.json) or a Hub repo id, got {model!r}"
        )
    if not local:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(str(model))
        except HFValidationError as error:
            raise ValueError(
                f"`model` must be a SEED checkpoint folder or a Hub repo id, got {model!r}"
            ) from error
    model = str(Path(model).resolve()) if local else str(model)
    out_dir.mkdir(parents=True, exist_ok=True)

    front_matter = {
        "title": title,
        "emoji": "🎨",
        "colorFrom": "indigo",
        "colorTo": "pink",
        "sdk": "gradio",
        "sdk_version": gradio.__version__,
        "app_file": "app.py",
        "pinned": False,
        "license": "apache-2.0",
        **({} if local else {"models": [model]}),
    }
    (out_dir / "README.md").write_text(
        README_TEMPLATE.format(
            front_matter=yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True),
            title=title,
            model_line="" if local else f" ([{model}](https://huggingface.co/{model}))",
        )
    )
    (out_dir / "app.py").write_text(APP_TEMPLATE.format(model=model))
    (out_dir / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
    _copy_package_sources(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed-hf space", description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", help="the Hub repo id of a SEED checkpoint (or a local folder, to try it here)"
    )
    parser.add_argument("out_dir", help="the Space folder to write (new or empty)")
    parser.add_argument("--title", default="SEED-LLaMA chat", help="the Space's title")
    args = parser.parse_args(argv)
    try:
        out_dir = write_space(args.model, args.out_dir, args.title)
    except ValueError as error:
        parser.exit(2, f"seed-hf space: error: {error}\n")
    print(f"wrote the Space folder {out_dir}; upload it with: seed-hf push {out_dir} REPO --repo-type space")
    return 0
