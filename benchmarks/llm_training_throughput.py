"""Training throughput of a tiny SEED-LLaMA with and without sequence packing, on the same data.

A random SEED-LLaMA (the test fixtures' tokenizer, `--hidden-size`, `--layers`) trains for `--steps` steps of the
``full`` stage on synthetic image-caption pairs and interleaved documents of varied lengths (so that padded
batches carry padding), once with padded batches and once packed (`SeedLlamaPackingCollator`: the batch's
samples laid end to end in rows of at most `--max-length` tokens, positions restarting per sample). Both runs
see the same samples in the same steps, so their losses agree. Throughput counts only real tokens (no padding):
tokens / train_runtime.

Usage: python benchmarks/llm_training_throughput.py [--steps 30] [--batch-size 16] [--hidden-size 128] [--layers 4]
       [--max-length 512]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seed_llama_fixtures import build_tiny_processor, build_tiny_seed_llama, build_tiny_tokenizer  # noqa: E402

from seed_hf.training.llm_training import build_trainer, load_recipe  # noqa: E402

WORDS = "a photo of the cat dog red sofa on beach mountain at sunset with storm quick brown fox".split()


def synthetic_records(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)

    def text():
        return " ".join(rng.choice(WORDS, size=int(rng.integers(2, 40))))

    def codes():
        return rng.integers(0, 64, size=32).tolist()

    records = []
    for index in range(count):
        if index % 3 == 2:
            num_images = int(rng.integers(1, 4))
            texts = [value for _ in range(num_images) for value in (text(), None)]
            records.append(
                {"texts": texts, "image_codes": [None if value is not None else codes() for value in texts]}
            )
        else:
            records.append({"text": text(), "image_codes": codes()})
    return records


class TokenCounter:
    """Wraps a collator and counts the real (non-padding) tokens of the batches it builds."""

    def __init__(self, collator):
        self.collator = collator
        self.tokens = 0

    def __call__(self, features):
        self.tokens += sum(len(feature["input_ids"]) for feature in features)
        return self.collator(features)


def run(folder: Path, data: str, packing: bool, args) -> dict:
    recipe = load_recipe(
        "llm_pretrain_full_tiny",
        model_name_or_path=str(folder / "base"),
        train_files=data,
        output_dir=str(folder / f"packing-{packing}"),
        packing=packing,
        max_length=args.max_length,
        training={
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch_size,
            "save_strategy": "no",
            "logging_steps": args.steps,
            "disable_tqdm": True,
        },
    )
    trainer = build_trainer(recipe)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    metrics = trainer.train().metrics
    return {
        "packing": packing,
        "tokens": counter.tokens,
        "seconds": metrics["train_runtime"],
        "tokens_per_second": counter.tokens / metrics["train_runtime"],
        "final_loss": trainer.state.log_history[-2]["loss"],
    }


def _prepare(folder: Path, args) -> str:
    """A random base model in `folder/base` and the records file; returns the records' path."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_seed_llama(
        tokenizer,
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
    )
    model.save_pretrained(folder / "base")
    build_tiny_processor(tokenizer).save_pretrained(folder / "base")
    data = folder / "records.jsonl"
    records = synthetic_records(args.steps * args.batch_size)
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(data)


def packing_rows(suite_args) -> list[dict]:
    """The suite's row (`run_all.compare`): packed vs padded training of the same samples; the ratio is tokens/s."""
    from run_all import compare  # the suite imports this module, so not at the top

    args = argparse.Namespace(
        steps=4 if suite_args.quick else 30, batch_size=16, max_length=512, hidden_size=128, layers=4
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _prepare(folder, args)
        tokens = run(folder, data, True, args)["tokens"]
        return [
            compare(
                "LLM training: packed vs padded batches (tokens/s)",
                lambda: run(folder, data, True, args),
                lambda: run(folder, data, False, args),
                suite_args.repeats,
                tokens,
            )
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--max-length", type=int, default=512, help="longest sample, and tokens per packed row"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _prepare(folder, args)
        results = [run(folder, data, packing, args) for packing in (False, True)]
    for result in results:
        print(
            f"packing={result['packing']!s:5}  tokens={result['tokens']:7d}  time={result['seconds']:7.2f}s  "
            f"throughput={result['tokens_per_second']:9.1f} tokens/s  last loss={result['final_loss']:.4f}"
        )
    print(f"speed-up from packing: {results[1]['tokens_per_second'] / results[0]['tokens_per_second']:.2f}x")


if __name__ == "__main__":
    main()
