"""The ``seed-hf`` command line.

Each sub-command lives next to the code it drives; this file only maps names to
``module:function`` entries, imported when the command is run so that ``seed-hf --help`` stays fast.
Every entry function takes the remaining argv and returns an exit code.
"""

import argparse
import sys
from importlib import import_module

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
        "seed_hf.training.shapes_eval",
        "main",
        "measure a SEED-Shapes checkpoint (metrics.json + PNG grid; seen and unseen splits)",
    ),
    "train-shapes": (
        "seed_hf.training.shapes_training",
        "main",
        "train the whole SEED stack on the SEED-Shapes world (every stage resumable)",
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
    "push": (
        "seed_hf.push",
        "main",
        "upload a SEED checkpoint folder to the Hugging Face Hub as one commit (safetensors only)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="seed-hf", description="SEED / SEED-LLaMA tools")
    parser.add_argument("command", choices=sorted(COMMANDS), help="sub-command to run")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print("\ncommands:")
        for name, (_, _, help_text) in sorted(COMMANDS.items()):
            print(f"  {name:24s} {help_text}")
        return 0
    args = parser.parse_args(argv[:1])
    module_name, function_name, _ = COMMANDS[args.command]
    entry = getattr(import_module(module_name), function_name)
    return int(entry(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
