"""Registration of seed-hf's configurations, models, processors and pipeline tasks with transformers.

Registration imports configuration and modeling files (torch + transformers building blocks) but never
diffusers or gradio: pipeline classes that need diffusers import it inside their methods.
"""

from importlib import import_module

_registered = False


def _load(path: str):
    module_name, _, attribute = path.rpartition(".")
    return getattr(import_module(module_name), attribute)


def register_all() -> None:
    """Register every Auto class and pipeline task of seed-hf (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import AutoConfig, AutoModel

    tokenizer_config = _load("seed_hf.modeling.configuration_seed_tokenizer.SeedTokenizerConfig")
    AutoConfig.register("seed_tokenizer", tokenizer_config, exist_ok=True)
    AutoModel.register(tokenizer_config, _load("seed_hf.modeling.modeling_seed_tokenizer.SeedTokenizerModel"), exist_ok=True)
    from transformers import AutoImageProcessor

    # PIL backend only: the processor needs no torchvision.
    AutoImageProcessor.register(
        tokenizer_config,
        image_processor_classes={"pil": _load("seed_hf.modeling.image_processing_seed.SeedImageProcessor")},
        exist_ok=True,
    )
