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

    # SEED-LLaMA: AutoModel gives the causal LM too, as users call it for a working model
    from transformers import AutoModelForCausalLM, AutoProcessor

    llama_config = _load("seed_hf.modeling.configuration_seed_llama.SeedLlamaConfig")
    llama_model = _load("seed_hf.modeling.modeling_seed_llama.SeedLlamaForCausalLM")
    AutoConfig.register("seed_llama", llama_config, exist_ok=True)
    AutoModelForCausalLM.register(llama_config, llama_model, exist_ok=True)
    AutoModel.register(llama_config, llama_model, exist_ok=True)
    AutoImageProcessor.register(
        llama_config,
        image_processor_classes={"pil": _load("seed_hf.modeling.image_processing_seed.SeedImageProcessor")},
        exist_ok=True,
    )
    AutoProcessor.register(llama_config, _load("seed_hf.modeling.processing_seed_llama.SeedLlamaProcessor"), exist_ok=True)

    # Pipeline tasks (the classes import diffusers only when the de-tokenizer is first used)
    from transformers.pipelines import PIPELINE_REGISTRY

    for task, pipeline_class in (
        ("seed-text-to-image", "seed_hf.pipelines.text_to_image.SeedTextToImagePipeline"),
        ("seed-image-to-text", "seed_hf.pipelines.text_to_image.SeedImageToTextPipeline"),
    ):
        PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=_load(pipeline_class), pt_model=AutoModelForCausalLM, type="multimodal"
        )
