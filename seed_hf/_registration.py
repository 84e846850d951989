"""Registration of seed-hf's configurations, models, processors and pipeline tasks with transformers.

`import seed_hf` must stay cheap, but transformers' Auto classes pull in torch and the whole modeling stack.
So `register_all` only installs an import hook: each registration runs once the transformers module that
owns the registry (`configuration_auto`, `modeling_auto`, ...) has been imported, or at once if it already
is. `AutoConfig`, `AutoModel`, `AutoProcessor` and `pipeline(...)` therefore find the seed-hf classes after
`import seed_hf`, and a program that never touches them pays nothing.

A registration imports seed-hf modules, which import transformers modules, some of them registries: it
would run inside a half-imported module. Registrations are therefore queued and run only when none of the
modules involved is in the middle of being imported; the end of each such import retries the queue.
Registration never imports diffusers or gradio.
"""

import importlib.abc
import sys
from collections.abc import Callable
from importlib import import_module

TOKENIZER_CONFIG = "seed_hf.modeling.configuration_seed_tokenizer.SeedTokenizerConfig"
TOKENIZER_MODEL = "seed_hf.modeling.modeling_seed_tokenizer.SeedTokenizerModel"
IMAGE_PROCESSOR = "seed_hf.modeling.image_processing_seed.SeedImageProcessor"
LLAMA_CONFIG = "seed_hf.modeling.configuration_seed_llama.SeedLlamaConfig"
LLAMA_MODEL = "seed_hf.modeling.modeling_seed_llama.SeedLlamaForCausalLM"
LLAMA_PROCESSOR = "seed_hf.modeling.processing_seed_llama.SeedLlamaProcessor"
PIPELINE_TASKS = {
    "seed-text-to-image": "seed_hf.pipelines.text_to_image.SeedTextToImagePipeline",
    "seed-image-to-text": "seed_hf.pipelines.text_to_image.SeedImageToTextPipeline",
}


def _load(path: str):
    module_name, _, attribute = path.rpartition(".")
    return getattr(import_module(module_name), attribute)


def _register_configs(configuration_auto) -> None:
    configuration_auto.AutoConfig.register("seed_tokenizer", _load(TOKENIZER_CONFIG), exist_ok=True)
    configuration_auto.AutoConfig.register("seed_llama", _load(LLAMA_CONFIG), exist_ok=True)


def _register_models(modeling_auto) -> None:
    modeling_auto.AutoModel.register(_load(TOKENIZER_CONFIG), _load(TOKENIZER_MODEL), exist_ok=True)
    # AutoModel gives the causal LM too: users call AutoModel.from_pretrained and expect a working SEED-LLaMA.
    for auto_class in (modeling_auto.AutoModel, modeling_auto.AutoModelForCausalLM):
        auto_class.register(_load(LLAMA_CONFIG), _load(LLAMA_MODEL), exist_ok=True)


def _register_image_processors(image_processing_auto) -> None:
    # PIL backend only: the processor needs no torchvision.
    for config in (TOKENIZER_CONFIG, LLAMA_CONFIG):
        image_processing_auto.AutoImageProcessor.register(
            _load(config), image_processor_classes={"pil": _load(IMAGE_PROCESSOR)}, exist_ok=True
        )


def _register_processors(processing_auto) -> None:
    processing_auto.AutoProcessor.register(_load(LLAMA_CONFIG), _load(LLAMA_PROCESSOR), exist_ok=True)


def _register_pipelines(pipelines) -> None:
    from transformers import AutoModelForCausalLM

    for task, pipeline_class in PIPELINE_TASKS.items():
        pipelines.PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=_load(pipeline_class), pt_model=AutoModelForCausalLM, type="multimodal"
        )


# transformers registry module -> the registration to run once it is imported
_REGISTRATIONS: dict[str, Callable] = {
    "transformers.models.auto.configuration_auto": _register_configs,
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.image_processing_auto": _register_image_processors,
    "transformers.models.auto.processing_auto": _register_processors,
    "transformers.pipelines": _register_pipelines,
}
# Modules the registrations import: while one of them is half-imported, the queue waits.
_WATCHED = set(_REGISTRATIONS) | {
    path.rpartition(".")[0]
    for path in (TOKENIZER_CONFIG, TOKENIZER_MODEL, IMAGE_PROCESSOR, LLAMA_CONFIG, LLAMA_MODEL, LLAMA_PROCESSOR)
} | {path.rpartition(".")[0] for path in PIPELINE_TASKS.values()}

_pending: list[str] = []
_flushing = False


def _importing(module_name: str) -> bool:
    spec = getattr(sys.modules.get(module_name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _flush() -> None:
    global _flushing
    if _flushing or any(_importing(name) for name in _WATCHED):
        return
    _flushing = True
    try:
        while _pending:
            module_name = _pending.pop(0)
            _REGISTRATIONS[module_name](sys.modules[module_name])
    finally:
        _flushing = False


class _FlushingLoader(importlib.abc.Loader):
    """The original loader, then queue the module's registration (if any) and retry the queue."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if module.__name__ in _REGISTRATIONS:
            _pending.append(module.__name__)
        # importlib clears `_initializing` only after exec_module returns: mark this module done first.
        module.__spec__._initializing = False
        _flush()

    def __getattr__(self, name):  # get_source, get_filename, ... as the original loader has them
        return getattr(self._loader, name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds the watched modules through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _FlushingLoader(spec.loader)
                return spec
        return None


_finder = _RegisterOnImport()


def register_all() -> None:
    """Register every Auto class and pipeline task of seed-hf (idempotent).

    Registries already imported are filled now; the others as soon as transformers imports them.
    """
    if _finder in sys.meta_path:
        return
    sys.meta_path.insert(0, _finder)
    _pending.extend(name for name in _REGISTRATIONS if name in sys.modules)
    _flush()
