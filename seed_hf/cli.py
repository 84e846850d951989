"""The ``seed-hf`` command line.

Each sub-command lives next to the code it drives; this file only maps names to
``module:function`` entries, imported when the command is run so that ``seed-hf --help`` stays fast.
Every entry function takes the remaining argv and returns an exit code.
"""

import argparse
import logging
import os
import sys
from importlib import import_module, metadata

# name -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "main": ("seed_hf.main_job", "main", "run the main job (demo outputs) on the shipped default model"),
    "train-llm": (
        "seed_hf.training.llm_training",
        "main",
        "run a SEED-LLaMA training stage (LoRA, merge, full, SFT) from a recipe",
    ),
    "tokenize-images": (
        "seed_hf.training.tokenize_images",
        "main",
        "turn a dataset's images into SEED codes (Parquet shards, resumable)",
    ),
    "evaluate-shapes": (
        "seed_hf.training.shapes.evaluate",
        "main",
        "measure a SEED-Shapes checkpoint (metrics.json + PNG grid; seen and unseen splits)",
    ),
    "probe-shapes": (
        "seed_hf.training.shapes.probe",
        "main",
        "measure, stage by stage, where a SEED-Shapes checkpoint fails on unseen combinations (probe.json/.md/.png)",
    ),
    "train-shapes": (
        "seed_hf.training.shapes.train",
        "main",
        "train the whole SEED stack on the SEED-Shapes world (every stage resumable)",
    ),
    "ablate-shapes": (
        "seed_hf.training.shapes.ablate",
        "main",
        "run a SEED-LLaMA paper ablation on SEED-Shapes (causal-vs-bilateral, lora-vs-full): two runs, one table",
    ),
    "train-tokenizer": (
        "seed_hf.training.tokenizer_stages",
        "main",
        "run SEED tokenizer training stage 1 (causal Q-Former ITC) or 2 (codebook) from a recipe",
    ),
    "convert-tokenizer": (
        "seed_hf.convert",
        "main",
        "convert the authors' seed_quantizer.pt to a seed_tokenizer folder",
    ),
    "convert-llama": (
        "seed_hf.convert_llama",
        "main",
        "convert an official SEED-LLaMA checkpoint folder to a seed_llama folder",
    ),
    "convert-release": (
        "seed_hf.convert_release",
        "main",
        "fetch the official SEED release repos and convert them into one SEED system folder",
    ),
    "demo": ("seed_hf.demo", "main", "serve the SEED chat demo (Gradio): read, draw and edit images"),
    "space": (
        "seed_hf.space",
        "main",
        "write a Hugging Face Space folder (app.py, requirements.txt, README.md) serving the chat demo",
    ),
    "push": (
        "seed_hf.push",
        "main",
        "upload a SEED checkpoint folder to the Hugging Face Hub as one commit (safetensors only)",
    ),
}


_STARTUP_NOISE_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: global flags, then a sub-command name and that command's own arguments."""
    parser = argparse.ArgumentParser(
        prog="seed-hf",
        description="SEED / SEED-LLaMA tools. `seed-hf COMMAND --help` shows a command's arguments.",
        epilog="commands:\n"
        + "\n".join(f"  {name:20s} {help_text}" for name, (_, _, help_text) in sorted(COMMANDS.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"seed-hf {_version()}", help="print the version"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of a one-line message",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="sub-command to run")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the sub-command's arguments")
    return parser


def _version() -> str:
    # from the installed metadata: importing seed_hf.__version__ would be as cheap, but this file must not
    # depend on what the package's __init__ imports
    try:
        return metadata.version("seed-hf")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run `seed-hf`; returns the exit code (0 done, 1 the command failed, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit:  # --help, --version or a usage error, already printed
        return int(exit.code or 0)
    module_name, function_name, _ = COMMANDS[args.command]
    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        # the status messages of seed-hf's commands are INFO (transformers' own loggers stay at their level)
        logging.getLogger("seed_hf").setLevel(logging.INFO)
    # With the `int8` extra installed, transformers and diffusers import torchao at start-up, which warns about its
    # CUDA-only extensions on a CPU machine and about registrations torch deprecated: nothing a command can act on.
    for name in _STARTUP_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        entry = getattr(import_module(module_name), function_name)
        return int(entry(args.arguments) or 0)
    except SystemExit as exit:  # the command's own --help (0) or usage error (2), already printed by argparse
        if not isinstance(exit.code, int | None):
            raise
        return exit.code or 0
    except (ValueError, TypeError, OSError) as error:
        if args.debug:
            raise
        # a bad argument (2), or a file or network fault such as a missing or existing folder (1): one line
        print(f"seed-hf {args.command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, OSError) else 2


if __name__ == "__main__":
    raise SystemExit(main())
