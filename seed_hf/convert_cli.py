"""Command-line flags shared by the converters (`seed-hf convert-tokenizer`, `convert-llama`, `convert-release`)."""

from __future__ import annotations

import argparse


def add_output_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    """
    Add the flags that say what becomes of the converted folder: `--overwrite`, `--push-to-hub REPO_ID` and
    `--private`.

    Args:
        parser (`argparse.ArgumentParser`): the converter's parser.
        output (`str`): the folder as the help texts name it, e.g. `"output_dir"` or `"--output-dir"`.
    """
    parser.add_argument("--overwrite", action="store_true", help=f"replace {output} if it exists")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", help=f"then upload {output} to this Hub repo as one commit"
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
