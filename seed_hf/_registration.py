"""Registration of seed-hf's configurations, models, processors and pipeline tasks with transformers.

`import seed_hf` registers everything and imports nothing heavy (neither torch nor transformers): each of
transformers' registries is filled when transformers imports it, wherever that happens, by a finder that wraps the
registry module's loader. Registrations import only seed-hf's configuration classes (the registries' keys); the
model, processor and pipeline classes, whose modules pull in the whole modeling stack, are registered as stand-ins
that import the real class on first use (`from_pretrained`, `from_config`, a call, any attribute). Nothing here
imports diffusers or gradio.

Why a finder rather than plain `AutoX.register` calls at import: those need transformers' Auto modules and
LLaMA's configuration imported first (seconds, mostly torch), which would make `import seed_hf` and
`seed-hf --help` as slow as importing the whole modeling stack. The remote-code mechanism (`auto_map` in saved
checkpoints) serves environments without seed-hf and does not replace registration where it is installed.
"""

import importlib.abc
import sys
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

_registered = False


def load_object(path: str):
    """Import `package.module.Name` and return `Name`."""
    module_name, _, attribute = path.rpartition(".")
    return getattr(import_module(module_name), attribute)


# kept: `AutoX.register` and `register_pipeline` take class objects, and importing the model, processor and pipeline
# classes loads the whole modeling stack; `auto_map` remote code needs `trust_remote_code` and registers nothing
class DeferredClass(type):
    """Metaclass of a stand-in for a class whose module is expensive to import.

    The stand-in carries the real class's name (registries and pipelines compare names) and any attributes
    given to `deferred_class`; every other attribute access and every call goes to the real class, imported
    on first use. Instances are therefore always instances of the real class.
    """

    def resolve(cls) -> type:
        return load_object(cls._deferred_path)

    def __getattr__(cls, name):  # only reached for attributes the stand-in itself lacks
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(cls.resolve(), name)

    def __call__(cls, *args, **kwargs):
        return cls.resolve()(*args, **kwargs)


def deferred_class(path: str, **attributes) -> DeferredClass:
    module_name, _, name = path.rpartition(".")
    namespace = {"__module__": module_name, "__qualname__": name, "_deferred_path": path, **attributes}
    return DeferredClass(name, (), namespace)


def _register_image_processors(image_processing_auto) -> None:
    # `AutoImageProcessor.register` checks the class's base (importing the modeling stack), so the stand-in
    # goes straight into the mapping it fills. PIL backend only: the processor needs no torchvision.
    image_processor = deferred_class(IMAGE_PROCESSOR)
    for config in (TOKENIZER_CONFIG, LLAMA_CONFIG):
        image_processing_auto.IMAGE_PROCESSOR_MAPPING.register(
            load_object(config), {"pil": image_processor}, exist_ok=True
        )


def _register_processors(processing_auto) -> None:
    processing_auto.AutoProcessor.register(
        load_object(LLAMA_CONFIG), deferred_class(LLAMA_PROCESSOR), exist_ok=True
    )


def _register_pipelines(pipelines) -> None:
    from transformers.models.auto.modeling_auto import AutoModelForCausalLM

    for task, pipeline_class in PIPELINE_TASKS.items():
        pipelines.PIPELINE_REGISTRY.register_pipeline(
            task,
            pipeline_class=deferred_class(pipeline_class),
            pt_model=AutoModelForCausalLM,
            type="multimodal",
        )


# The classes seed-hf's configurations import (theirs and transformers' ones they extend), by module: each module
# must be complete before the configurations can be registered. An import of one of them that triggers the
# registration half-way (LLaMA's configuration imports transformers' Auto package, which registers) defers it to
# the end of that import.
_CONFIGURATION_CLASSES = {
    path.rpartition(".")[0]: path.rpartition(".")[2]
    for path in (
        TOKENIZER_CONFIG,
        LLAMA_CONFIG,
        "transformers.models.llama.configuration_llama.LlamaConfig",
        "transformers.models.blip_2.configuration_blip_2.Blip2VisionConfig",
        "transformers.models.vit.configuration_vit.ViTConfig",
    )
}


def _register_configurations(_module) -> bool:
    """Register the configurations once `transformers.models.auto` is imported; `False` (and nothing done) while
    a module they need is itself being imported: its own import runs this again when done."""
    if "transformers.models.auto" not in sys.modules:
        return False
    for module_name, class_name in _CONFIGURATION_CLASSES.items():
        module = sys.modules.get(module_name)
        if module is not None and not hasattr(module, class_name):
            return False
    from transformers.models.auto.configuration_auto import AutoConfig

    AutoConfig.register("seed_tokenizer", load_object(TOKENIZER_CONFIG), exist_ok=True)
    AutoConfig.register("seed_llama", load_object(LLAMA_CONFIG), exist_ok=True)
    return True


def _register_models(modeling_auto) -> None:
    tokenizer_config, llama_config = load_object(TOKENIZER_CONFIG), load_object(LLAMA_CONFIG)
    modeling_auto.AutoModel.register(
        tokenizer_config, deferred_class(TOKENIZER_MODEL, config_class=tokenizer_config), exist_ok=True
    )
    # AutoModel gives the causal LM too: users call AutoModel.from_pretrained and expect a working SEED-LLaMA. So do
    # the Auto classes of the built-in image-text-to-text and any-to-any tasks: SEED-LLaMA reads the images of
    # its processor's chat messages (or of `<image>` in text) and answers in text.
    llama_model = deferred_class(LLAMA_MODEL, config_class=llama_config)
    for auto_class in (
        modeling_auto.AutoModel,
        modeling_auto.AutoModelForCausalLM,
        modeling_auto.AutoModelForImageTextToText,
        modeling_auto.AutoModelForMultimodalLM,
    ):
        auto_class.register(llama_config, llama_model, exist_ok=True)


# transformers' registries, filled when transformers imports them, so that `import seed_hf` (and `seed-hf --help`)
# imports neither torch nor transformers. A registration imports only seed-hf's configuration classes (the
# registries' keys; the model, processor and pipeline classes are stand-ins) and runs at the end of the registry's
# own import, wherever that happens. The configurations come first: every other registry imports them.
_ON_IMPORT = {
    "transformers.models.auto": _register_configurations,
    **dict.fromkeys(_CONFIGURATION_CLASSES, _register_configurations),
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.image_processing_auto": _register_image_processors,
    "transformers.models.auto.processing_auto": _register_processors,
    "transformers.pipelines": _register_pipelines,
}


class _RegisteringLoader(importlib.abc.Loader):
    """The original loader, then the registration of the module it executed."""

    def __init__(self, loader, registration):
        self._loader, self._registration = loader, registration

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_registration(self._registration, module)

    def __getattr__(self, name):  # get_source, get_filename, is_package, ... as the original loader has them
        return getattr(self._loader, name)


# kept: transformers has no hook that runs when its registries are imported, and `AutoX.register` at `import seed_hf`
# would import them (and LLaMA's configuration, torch) first
class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Wraps the loaders of the `_ON_IMPORT` modules found by the other finders."""

    def find_spec(self, fullname, path, target=None):
        registration = _ON_IMPORT.get(fullname)
        if registration is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _RegisteringLoader(spec.loader, registration)
                return spec
        return None


# Registrations waiting for the configurations: a registry imported while the configurations themselves are being
# imported (BLIP-2's and LLaMA's configurations import transformers' Auto modules) is filled right after them.
_pending: list[tuple] = []
_configurations_registered = False


def _run_registration(registration, module) -> None:
    global _configurations_registered
    if registration is _register_configurations:
        if _configurations_registered or not registration(module):
            return
        _configurations_registered = True
        while _pending:
            waiting, waiting_module = _pending.pop(0)
            waiting(waiting_module)
    elif _configurations_registered:
        registration(module)
    else:
        _pending.append((registration, module))


def register_all() -> None:
    """Register every Auto class and pipeline task of seed-hf (idempotent). Nothing is imported here: each
    registry is filled when transformers imports it (at once for those already imported)."""
    global _registered
    if _registered:
        return
    _registered = True
    sys.meta_path.insert(0, _RegisterOnImport())
    for module_name, registration in _ON_IMPORT.items():
        if module_name in sys.modules:
            _run_registration(registration, sys.modules[module_name])
