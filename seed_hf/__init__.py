"""seed-hf: Hugging Face-native SEED tokenizer, SEED-LLaMA and the unCLIP de-tokenizer.

Importing the package registers every configuration, Auto class and pipeline task it defines, so that
``AutoModel.from_pretrained(folder)`` and ``pipeline("seed-text-to-image", model=folder)`` work after
``import seed_hf``. The import itself loads neither torch nor transformers: each registry is filled when
transformers imports it, and the public classes below are imported on first access.
"""

from importlib import import_module

from ._registration import register_all

__version__ = "0.1.0"

# Public names and the module that defines each; resolved on first attribute access.
_LAZY_ATTRIBUTES: dict[str, str] = {
    "SeedTokenizerConfig": "seed_hf.modeling.configuration_seed_tokenizer",
    "SeedTokenizerModel": "seed_hf.modeling.modeling_seed_tokenizer",
    "SeedTokenizerOutput": "seed_hf.modeling.modeling_seed_tokenizer",
    "SeedImageProcessor": "seed_hf.modeling.image_processing_seed",
    "SeedLlamaConfig": "seed_hf.modeling.configuration_seed_llama",
    "SeedLlamaForCausalLM": "seed_hf.modeling.modeling_seed_llama",
    "SeedLlamaProcessor": "seed_hf.modeling.processing_seed_llama",
    "ImageSegment": "seed_hf.modeling.generation_seed_llama",
    "parse_generation": "seed_hf.modeling.generation_seed_llama",
    "SeedImageConstraintLogitsProcessor": "seed_hf.modeling.generation_seed_llama",
    "SeedImageGuidanceLogitsProcessor": "seed_hf.modeling.generation_seed_llama",
    "SeedUnCLIPPipeline": "seed_hf.pipelines.pipeline_seed_unclip",
}

__all__ = ["__version__", "register_all", *_LAZY_ATTRIBUTES]


def __getattr__(name: str):
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'seed_hf' has no attribute {name!r}")
    value = getattr(import_module(module_name), name)
    globals()[name] = value
    return value


register_all()
