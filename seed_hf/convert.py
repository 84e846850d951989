"""Conversion of the authors' SEED tokenizer checkpoint (`seed_quantizer.pt`) to a `seed_tokenizer` folder.

The authors' state dict (class `Blip2QformerQuantizer`) is renamed key by key onto
[`SeedTokenizerModel`]. Every checkpoint key is used exactly once: a key the rules do not consume, a
parameter of our model that no key fills, or a shape that does not fit stops the conversion with a list.
Sizes that tensor shapes reveal (widths, depths, codebook, image size, cross-attention frequency) are read
off the checkpoint; the rest (head counts, LayerNorm eps) come from the config.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from seed_hf.convert_cli import add_output_arguments
from seed_hf.io_utils import staged_directory
from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig

# The reference's Q-Former keeps BERT's position-id buffer although no position embedding exists.
_LEFTOVER_BUFFERS = ("Qformer.bert.embeddings.position_ids", "Reverse_Qformer.bert.embeddings.position_ids")

# (pattern on the authors' key, replacement in seed-hf's naming); applied to keys that need no reshaping.
_RENAMES: list[tuple[str, str]] = [
    (r"^query_tokens$", "query_tokens"),
    (r"^reverse_tokens$", "reverse_query_tokens"),
    (r"^pos_embed$", "reconstruction_blocks.position_embedding"),
    (r"^pos_embed_image$", "generation_blocks.position_embedding"),
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (
        r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$",
        r"vision_model.encoder.layers.\1.self_attn.qkv.weight",
    ),
    (
        r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.",
        r"vision_model.encoder.layers.\1.self_attn.projection.",
    ),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
    (r"^ln_vision\.", "vision_model.post_layernorm."),
    (r"^(Qformer|Reverse_Qformer)\.bert\.embeddings\.LayerNorm\.", r"\1.layernorm."),
    (
        r"^(Qformer|Reverse_Qformer)\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.",
        r"\1.encoder.layer.\2.\3.attention.",
    ),
    (r"^(Qformer|Reverse_Qformer)\.bert\.encoder\.layer\.(\d+)\.", r"\1.encoder.layer.\2."),
    (r"^quantize\.embedding\.", "codebook."),
    (r"^(encode_task_layer|decode_task_layer)\.", r"\1."),
    (r"^(blocks|blocks_image)\.(\d+)\.norm1\.", r"\1.layers.\2.layernorm_before."),
    (r"^(blocks|blocks_image)\.(\d+)\.norm2\.", r"\1.layers.\2.layernorm_after."),
    (r"^(blocks|blocks_image)\.(\d+)\.attn\.proj\.", r"\1.layers.\2.attention.o_proj."),
    (r"^(blocks|blocks_image)\.(\d+)\.mlp\.", r"\1.layers.\2.mlp."),
    (r"^image_down\.", "generation_head."),
    (r"^distill_image_proj\.", "generation_projection."),
]
_MODULE_PREFIXES = {
    "Qformer.": "qformer.",
    "Reverse_Qformer.": "reverse_qformer.",
    "blocks.": "reconstruction_blocks.",
    "blocks_image.": "generation_blocks.",
}
_VISION_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias$")
_DECODER_QKV = re.compile(r"^(blocks|blocks_image)\.(\d+)\.attn\.qkv\.(weight|bias)$")


class ConversionError(ValueError):
    """The checkpoint does not fit the model; the message lists every offending key."""


def load_reference_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the authors' checkpoint: a `.pt`/`.pth`/`.bin` state dict (safe `weights_only` load) or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as error:  # empty, truncated, not a .pt
        raise ConversionError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__})"
        ) from error
    # Some releases wrap the weights, e.g. {"model": state_dict}.
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state_dict, Mapping) and set(state_dict) == {wrapper}:
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ConversionError(f"{path} does not hold a flat state dict of tensors")
    return dict(state_dict)


def config_from_reference_schema(reference: Mapping) -> SeedTokenizerConfig:
    """Build a config from the reference schema used by the fixtures' `config.json` and the manifests."""
    vision, qformer, decoder = reference["vision"], reference["qformer"], reference["decoder"]
    if qformer.get("num_query_tokens", 32) != 32:
        raise ConversionError(f"the reference always uses 32 queries, got {qformer['num_query_tokens']}")
    return SeedTokenizerConfig(
        vision_config={
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "hidden_size": vision["hidden_size"],
            "num_hidden_layers": vision["num_layers"],
            "num_attention_heads": vision["num_heads"],
            "intermediate_size": vision["mlp_hidden"],
            "layer_norm_eps": vision["layer_norm_eps"],
        },
        ln_vision_eps=vision["ln_vision_eps"],
        qformer_config={
            "hidden_size": qformer["hidden_size"],
            "num_hidden_layers": qformer["num_layers"],
            "num_attention_heads": qformer["num_heads"],
            "intermediate_size": qformer["intermediate_size"],
            "cross_attention_frequency": qformer["cross_attention_freq"],
            "layer_norm_eps": qformer["layer_norm_eps"],
            "hidden_act": qformer["hidden_act"],
        },
        num_query_tokens=qformer.get("num_query_tokens", 32),
        num_codes=reference["codebook"]["num_codes"],
        code_dim=reference["codebook"]["code_dim"],
        decoder_config={
            "num_hidden_layers": decoder["num_blocks"],
            "num_attention_heads": decoder["num_heads"],
            "intermediate_size": int(decoder["mlp_ratio"] * qformer["hidden_size"]),
            "layer_norm_eps": decoder["layer_norm_eps"],
        },
        generation_head_widths=list(reference["image_down"]),
        generation_embedding_dim=reference["generation_embedding_dim"],
        use_qformer_image=reference.get("use_qformer_image", False),
        image_mean=reference.get("image_mean", SeedTokenizerConfig().image_mean),
        image_std=reference.get("image_std", SeedTokenizerConfig().image_std),
    )


def _layer_indices(state_dict: Mapping, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state_dict if (m := pattern.match(key))})


def infer_config(
    state_dict: Mapping[str, torch.Tensor], config: SeedTokenizerConfig | None = None
) -> SeedTokenizerConfig:
    """Read every size the tensor shapes reveal; take head counts and eps from `config` (default: the release)."""
    config = config if config is not None else SeedTokenizerConfig()
    required = [
        "query_tokens",
        "visual_encoder.cls_token",
        "visual_encoder.pos_embed",
        "visual_encoder.patch_embed.proj.weight",
        "quantize.embedding.weight",
        "distill_image_proj.weight",
    ]
    absent = [key for key in required if key not in state_dict]
    if absent:
        raise ConversionError(f"not a SEED tokenizer checkpoint: missing keys {absent}")
    values = config.to_dict()
    vision = values["vision_config"]
    vision["hidden_size"] = state_dict["visual_encoder.cls_token"].shape[-1]
    patch = state_dict["visual_encoder.patch_embed.proj.weight"].shape[-1]
    num_patches = state_dict["visual_encoder.pos_embed"].shape[1] - 1
    grid = round(num_patches**0.5)
    if grid * grid != num_patches:
        raise ConversionError(
            f"visual_encoder.pos_embed has {num_patches} patch positions, not a square grid"
        )
    vision["patch_size"], vision["image_size"] = patch, grid * patch
    vision_layers = _layer_indices(state_dict, "visual_encoder.blocks.")
    vision["num_hidden_layers"] = len(vision_layers)
    if vision_layers:
        vision["intermediate_size"] = state_dict["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0]

    for source, target in (("Qformer", "qformer_config"), ("Reverse_Qformer", "reverse_qformer_config")):
        layers = _layer_indices(state_dict, f"{source}.bert.encoder.layer.")
        if not layers:
            continue
        qformer = values.get(target) or dict(values["qformer_config"])
        qformer["hidden_size"] = state_dict[
            f"{source}.bert.encoder.layer.0.attention.self.query.weight"
        ].shape[0]
        qformer["num_hidden_layers"] = len(layers)
        qformer["intermediate_size"] = state_dict[
            f"{source}.bert.encoder.layer.0.intermediate_query.dense.weight"
        ].shape[0]
        cross = [
            i
            for i in layers
            if f"{source}.bert.encoder.layer.{i}.crossattention.self.query.weight" in state_dict
        ]
        if not cross or cross[0] != 0:
            raise ConversionError(f"{source}: layer 0 must have cross-attention, found it in layers {cross}")
        frequency = cross[1] - cross[0] if len(cross) > 1 else len(layers)
        if cross != list(range(0, len(layers), frequency)):
            raise ConversionError(
                f"{source}: cross-attention layers {cross} are not evenly spaced from layer 0"
            )
        qformer["cross_attention_frequency"] = frequency
        values[target] = qformer

    values["num_query_tokens"] = state_dict["query_tokens"].shape[1]
    values["num_codes"], values["code_dim"] = state_dict["quantize.embedding.weight"].shape
    values["use_qformer_image"] = "reverse_tokens" in state_dict
    if not values["use_qformer_image"]:
        values["reverse_qformer_config"] = None
        head = _layer_indices(state_dict, "image_down.")
        values["generation_head_widths"] = [state_dict[f"image_down.{i}.weight"].shape[0] for i in head]
    values["generation_embedding_dim"] = state_dict["distill_image_proj.weight"].shape[0]
    decoder = values["decoder_config"]
    decoder_layers = _layer_indices(state_dict, "blocks.")
    decoder["num_hidden_layers"] = len(decoder_layers)
    if decoder_layers:
        decoder["intermediate_size"] = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    return SeedTokenizerConfig(**values)


def _rename(key: str) -> str | None:
    for pattern, replacement in _RENAMES:
        if re.search(pattern, key):
            renamed = re.sub(pattern, replacement, key)
            for old, new in _MODULE_PREFIXES.items():
                if renamed.startswith(old):
                    return new + renamed[len(old) :]
            return renamed
    return None


def convert_state_dict(
    reference: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map the authors' state dict onto seed-hf's keys; `expected` is the target model's state dict (or shapes).

    Raises [`ConversionError`] listing every unused checkpoint key, every unfilled model key and every shape
    mismatch.
    """
    converted: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    vision_qv_bias: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in reference.items():
        if key in _LEFTOVER_BUFFERS:
            continue
        if match := _VISION_QV_BIAS.match(key):
            vision_qv_bias.setdefault(match.group(1), {})[match.group(2)] = tensor
            continue
        if match := _DECODER_QKV.match(key):
            blocks = "reconstruction_blocks" if match.group(1) == "blocks" else "generation_blocks"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                converted[f"{blocks}.layers.{match.group(2)}.attention.{name}.{match.group(3)}"] = (
                    part.clone()
                )
            continue
        target = _rename(key)
        if target is None:
            unused.append(key)
        else:
            converted[target] = tensor
    for layer, biases in vision_qv_bias.items():
        if set(biases) != {"q", "v"}:
            unused.extend(f"visual_encoder.blocks.{layer}.attn.{name}_bias" for name in biases)
            continue
        # Upstream keeps one qkv bias with a fixed zero block for the keys, as the reference computes it.
        converted[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat(
            (biases["q"], torch.zeros_like(biases["q"]), biases["v"])
        )
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(converted) & set(expected))
        if tuple(converted[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    if unused:
        problems.append(f"checkpoint keys with no place in the model: {sorted(unused)}")
    if missing:
        problems.append(f"model keys the checkpoint does not fill: {missing}")
    if unexpected:
        problems.append(f"converted keys the model does not have: {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if problems:
        raise ConversionError("cannot convert the SEED tokenizer checkpoint:\n- " + "\n- ".join(problems))
    return converted


def build_model(state_dict: Mapping[str, torch.Tensor], config: SeedTokenizerConfig):
    """Instantiate [`SeedTokenizerModel`] for `config` and load the authors' `state_dict` into it strictly."""
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    model = SeedTokenizerModel(config)
    converted = convert_state_dict(state_dict, model.state_dict())
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_seed_tokenizer(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: SeedTokenizerConfig | Mapping | None = None,
    overwrite: bool = False,
    *,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    **push_kwargs,
):
    """Convert the authors' checkpoint into a `seed_tokenizer` folder (config, safetensors, image processor).

    `config` supplies what shapes cannot reveal (head counts, eps): a [`SeedTokenizerConfig`], a dict in the
    reference schema, or `None` for the release's values. The folder is written to a temporary directory
    beside `output_dir` and renamed into place, so a failed conversion leaves nothing half-written.
    With `push_to_hub`, the written folder is uploaded to `repo_id` (default: the folder's name) with
    [`~seed_hf.push.push_folder`], which takes `push_kwargs` (`private`, `revision`, `token`, ...).
    Returns the converted model.
    """
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor

    if isinstance(config, Mapping):
        config = config_from_reference_schema(config)
    state_dict = load_reference_state_dict(checkpoint)
    model = build_model(state_dict, infer_config(state_dict, config))
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"output_dir {output_dir} exists; pass overwrite=True to replace it")
    with staged_directory(output_dir, inputs=[checkpoint]) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        SeedImageProcessor(
            size=model.config.image_size, image_mean=model.config.image_mean, image_std=model.config.image_std
        ).save_pretrained(staging)
    if push_to_hub:
        from seed_hf.push import push_folder

        push_folder(output_dir, repo_id or output_dir.resolve().name, **push_kwargs)
    return model


def convert_reference_fixture(folder: str | os.PathLike):
    """Convert one parity-fixture folder (`config.json` + `original_state_dict.*`) into a model in eval mode."""
    folder = Path(folder)
    config = config_from_reference_schema(json.loads((folder / "config.json").read_text()))
    checkpoint = folder / "original_state_dict.safetensors"
    if not checkpoint.exists():
        checkpoint = folder / "original_state_dict.pt"
    state_dict = load_reference_state_dict(checkpoint)
    return build_model(state_dict, infer_config(state_dict, config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seed-hf convert-tokenizer",
        description="Convert the authors' SEED tokenizer checkpoint (seed_quantizer.pt) to a seed_tokenizer folder.",
    )
    parser.add_argument(
        "checkpoint", help="the authors' state dict (.pt, read with weights_only=True, or .safetensors)"
    )
    parser.add_argument(
        "output_dir", help="folder to write (config.json, model.safetensors, preprocessor_config.json)"
    )
    parser.add_argument(
        "--config", help="JSON in the reference schema (head counts, eps); default: the release's"
    )
    add_output_arguments(parser, "output_dir")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text()) if args.config else None
    model = convert_seed_tokenizer(
        args.checkpoint,
        args.output_dir,
        config=config,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub is not None,
        repo_id=args.push_to_hub,
        private=args.private or None,  # None: the namespace's default visibility
    )
    print(f"wrote {args.output_dir} ({model.num_parameters():,} parameters)")
    return 0
