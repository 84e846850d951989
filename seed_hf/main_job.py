"""The README's main job: run the shipped default model and write demo outputs to ``outputs/``.

The shipped default model (SEED-Shapes) does not exist yet; until it lands this job says so and
exits successfully after checking that the package and its Auto registrations load.
"""

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed-hf main")
    parser.add_argument("--output-dir", default="outputs", help="where PNGs and the report are written")
    args = parser.parse_args(argv)

    from transformers import AutoConfig

    import seed_hf

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "seed_hf_version": seed_hf.__version__,
        "default_model": None,
        "status": "placeholder: the shipped SEED-Shapes model does not exist yet, so no demo was run",
        # checks that `import seed_hf` registered the model types with transformers
        "registered_model_types": [AutoConfig.for_model(name).model_type for name in ("seed_tokenizer", "seed_llama")],
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(report["status"])
    print(f"wrote {output_dir / 'report.json'}")
    return 0
