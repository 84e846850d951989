"""Conversion of an official SEED-LLaMA checkpoint folder (`AILab-CVC/seed-llama-8b-sft` and siblings: a
transformers LLaMA folder with the resized vocabulary and a tokenizer holding the added image tokens) into a
`seed_llama` folder that `AutoModel` / `AutoProcessor` load after `import seed_hf`.

The weights keep their names and values (`SeedLlamaForCausalLM` is `LlamaForCausalLM` with the same modules):
safetensors shards are copied, `.bin` shards are re-written as safetensors. What changes: `config.json`
(model_type `seed_llama` plus the image-token layout read from the tokenizer), the tokenizer (gains the
`<image>` placeholder, which is never embedded, so no weight changes), and a processor with the chat templates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import AutoTokenizer, GenerationConfig

from seed_hf.convert_cli import add_output_arguments
from seed_hf.io_utils import staged_directory
from seed_hf.modeling.configuration_seed_llama import SeedLlamaConfig
from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout
from seed_hf.modeling.image_processing_seed import SeedImageProcessor
from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor, default_chat_templates

IMAGE_PLACEHOLDER = "<image>"
# the release's inference settings (sampling, top_p 0.5, temperature 1.0, 512 new tokens)
RELEASE_GENERATION_DEFAULTS = {"do_sample": True, "top_p": 0.5, "temperature": 1.0, "max_new_tokens": 512}


class CheckpointLayoutError(ValueError):
    """The checkpoint's tokenizer or weights do not have the SEED-LLaMA image-token layout."""


def read_image_token_layout(tokenizer, num_image_codes: int | None = 8192) -> SeedImageTokenLayout:
    """Read the ids of `<img_00000>` ..., `<img>` and `</img>` from a release tokenizer (no `<image>` yet) and
    check that the codes are contiguous and, unless `num_image_codes` is None, that there are that many."""
    try:
        layout = SeedImageTokenLayout.from_tokenizer(tokenizer, image_token=None)
    except ValueError as error:
        raise CheckpointLayoutError(str(error)) from error
    if num_image_codes is not None and layout.num_image_codes != num_image_codes:
        raise CheckpointLayoutError(
            f"expected {num_image_codes} image tokens, the tokenizer has {layout.num_image_codes}"
        )
    return layout


def _weight_files(input_dir: Path) -> list[Path]:
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = sorted(input_dir.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {input_dir}")


def _copy_weights(input_dir: Path, staging: Path) -> dict[str, tuple[int, ...]]:
    """Copy / re-write the weight shards as safetensors into `staging`; return every tensor's shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    files = _weight_files(input_dir)
    renamed = {}
    for path in tqdm(files, desc="weights", unit="shard"):
        if path.suffix == ".safetensors":
            shutil.copy2(path, staging / path.name)
            with safe_open(str(path), framework="pt") as shard:
                shapes.update({key: tuple(shard.get_slice(key).get_shape()) for key in shard.keys()})
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            name = path.name.replace("pytorch_model", "model").replace(".bin", ".safetensors")
            save_file(
                {key: value.contiguous() for key, value in state_dict.items()},
                staging / name,
                metadata={"format": "pt"},
            )
            renamed[path.name] = name
            shapes.update({key: tuple(value.shape) for key, value in state_dict.items()})
    for index in input_dir.glob("*.index.json"):
        data = json.loads(index.read_text())
        data["weight_map"] = {key: renamed.get(name, name) for key, name in data["weight_map"].items()}
        index_name = "model.safetensors.index.json" if index.name.startswith("pytorch_model") else index.name
        (staging / index_name).write_text(json.dumps(data, indent=2))
    return shapes


def convert_seed_llama(
    input_dir,
    output_dir,
    *,
    chat_template: str = "vicuna",
    num_image_codes: int | None = 8192,
    tokens_per_image: int = 32,
    visual_tokenizer_name_or_path: str | None = None,
    detokenizer_name_or_path: str | None = None,
    overwrite: bool = False,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    **push_kwargs,
) -> SeedLlamaConfig:
    """
    Convert an official SEED-LLaMA folder into a `seed_llama` folder. The folder is written to a temporary
    directory beside `output_dir` and renamed into place, so a failed conversion leaves nothing half-written.

    Args:
        input_dir: the official folder (`config.json` with model_type `llama`, weights, tokenizer files).
        output_dir: the folder to write.
        chat_template: default chat template of the processor, `"vicuna"` (8B) or `"llama2"` (14B); both ship.
        num_image_codes: expected number of image tokens (8192 in the release; `None`: whatever is there).
        tokens_per_image: codes per image (32).
        visual_tokenizer_name_or_path, detokenizer_name_or_path: recorded in the config (relative paths are
            resolved against the converted folder).
        overwrite: replace `output_dir` when it exists.
        push_to_hub: then upload the written folder to the Hub as one commit with [`~seed_hf.push.push_folder`].
        repo_id: the Hub repo to push to; defaults to the folder's name.
        push_kwargs: passed on to [`~seed_hf.push.push_folder`] (`private`, `revision`, `token`, ...).

    Returns the `SeedLlamaConfig` written.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"input_dir {input_dir} has no config.json")
    llama_config = json.loads(config_path.read_text())
    if llama_config.get("model_type") != "llama":
        raise CheckpointLayoutError(
            f"expected a LLaMA checkpoint (model_type 'llama'), got {llama_config.get('model_type')!r}"
        )
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"output_dir {output_dir} exists; pass overwrite=True to replace it")
    default_templates = default_chat_templates(chat_template)

    tokenizer = AutoTokenizer.from_pretrained(input_dir)
    layout = read_image_token_layout(tokenizer, num_image_codes)
    if tokenizer.pad_token is None:
        # the release pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "left"  # batched prompts for generate
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]})
    layout = dataclasses.replace(
        layout,
        tokens_per_image=tokens_per_image,
        image_placeholder_id=tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER),
    )

    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        llama_config.pop(key, None)
    try:
        config = SeedLlamaConfig(
            **llama_config,
            **dataclasses.asdict(layout),
            visual_tokenizer_name_or_path=visual_tokenizer_name_or_path,
            detokenizer_name_or_path=detokenizer_name_or_path,
        )
    except (ValueError, StrictDataclassError) as error:  # e.g. image tokens past the checkpoint's vocab_size
        raise CheckpointLayoutError(f"the tokenizer does not fit the checkpoint's config: {error}") from error
    config.architectures = ["SeedLlamaForCausalLM"]

    with staged_directory(output_dir, inputs=[input_dir]) as staging:
        shapes = _copy_weights(input_dir, staging)
        embedding_rows = shapes.get("model.embed_tokens.weight", (None,))[0]
        needed = max(layout.image_code_end_id, layout.boi_token_id + 1, layout.eoi_token_id + 1)
        if embedding_rows is None or embedding_rows < needed or embedding_rows != config.vocab_size:
            raise CheckpointLayoutError(
                f"model.embed_tokens.weight has {embedding_rows} rows; the config says vocab_size={config.vocab_size} "
                f"and the image tokens need {needed}"
            )
        config.save_pretrained(staging)
        generation_path = input_dir / "generation_config.json"
        generation_config = (
            GenerationConfig.from_pretrained(input_dir) if generation_path.is_file() else GenerationConfig()
        )
        generation_config.update(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **RELEASE_GENERATION_DEFAULTS,
        )
        generation_config.save_pretrained(staging)
        processor = SeedLlamaProcessor(
            SeedImageProcessor(),
            tokenizer,
            tokens_per_image=tokens_per_image,
            chat_template=default_templates,
        )
        processor.save_pretrained(staging)
    if push_to_hub:
        from seed_hf.push import push_folder

        push_folder(output_dir, repo_id or output_dir.resolve().name, **push_kwargs)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seed-hf convert-llama",
        description="Convert an official SEED-LLaMA checkpoint folder (LLaMA layout + tokenizer with image tokens) "
        "to a seed_llama folder.",
    )
    parser.add_argument(
        "input_dir", help="the official folder, e.g. a download of AILab-CVC/seed-llama-8b-sft"
    )
    parser.add_argument("output_dir", help="the seed_llama folder to write")
    parser.add_argument(
        "--chat-template",
        choices=["vicuna", "llama2"],
        default="vicuna",
        help="default chat template: vicuna for the 8B models, llama2 for the 14B ones",
    )
    parser.add_argument("--num-image-codes", type=int, default=8192, help="expected number of image tokens")
    parser.add_argument("--visual-tokenizer", help="seed_tokenizer folder or Hub id recorded in the config")
    parser.add_argument("--detokenizer", help="unCLIP de-tokenizer folder or Hub id recorded in the config")
    add_output_arguments(parser, "output_dir")
    args = parser.parse_args(argv)
    config = convert_seed_llama(
        args.input_dir,
        args.output_dir,
        chat_template=args.chat_template,
        num_image_codes=args.num_image_codes,
        visual_tokenizer_name_or_path=args.visual_tokenizer,
        detokenizer_name_or_path=args.detokenizer,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub is not None,
        repo_id=args.push_to_hub,
        private=args.private or None,  # None: the namespace's default visibility
    )
    print(
        f"wrote {args.output_dir}: {config.num_image_codes} image codes from id {config.image_code_start_id}, "
        f"<img>={config.boi_token_id}, </img>={config.eoi_token_id}, <image>={config.image_placeholder_id}"
    )
    return 0


__all__ = ["CheckpointLayoutError", "convert_seed_llama", "read_image_token_layout"]
