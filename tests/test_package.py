import json
import subprocess
import sys

import pytest


def _run_python(code: str, cwd) -> str:
    # run from outside the checkout so that only the installed package is importable
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
    return result.stdout


def test_import_loads_neither_the_modeling_stack_nor_optional_dependencies(tmp_path):
    heavy = (
        "diffusers",
        "gradio",
        "transformers.modeling_utils",
        "transformers.pipelines",
        "seed_hf.pipelines",
    )
    loaded = json.loads(
        _run_python(
            "import json, sys; import seed_hf; "
            f"print(json.dumps(sorted(m for m in sys.modules if m in {heavy!r} or m.split('.')[0] in {heavy!r})))",
            tmp_path,
        )
    )
    assert loaded == []


REGISTRY_CHECK = (
    "from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor; "
    "from transformers.pipelines import PIPELINE_REGISTRY; "
    "from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING; "
    "from transformers.models.auto.processing_auto import PROCESSOR_MAPPING; "
    "from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING; "
    "tok, llama = AutoConfig.for_model('seed_tokenizer'), AutoConfig.for_model('seed_llama'); "
    "print(json.dumps([type(tok).__name__, type(llama).__name__, "
    "MODEL_MAPPING[type(tok)].__name__, MODEL_MAPPING[type(llama)].__name__, "
    "MODEL_FOR_CAUSAL_LM_MAPPING[type(llama)].__name__, PROCESSOR_MAPPING[type(llama)].__name__, "
    "IMAGE_PROCESSOR_MAPPING[type(tok)]['pil'].__name__, "
    "sorted(t for t in PIPELINE_REGISTRY.get_supported_tasks() if t.startswith('seed-'))]))"
)
REGISTERED = [
    "SeedTokenizerConfig",
    "SeedLlamaConfig",
    "SeedTokenizerModel",
    "SeedLlamaForCausalLM",
    "SeedLlamaForCausalLM",
    "SeedLlamaProcessor",
    "SeedImageProcessor",
    ["seed-image-to-text", "seed-text-to-image"],
]


@pytest.mark.parametrize(
    "before",
    [
        "import seed_hf",
        # transformers' registries imported before seed_hf are filled at once
        "from transformers import AutoModel, AutoProcessor, AutoImageProcessor; "
        "import transformers.pipelines; import seed_hf",
        # a seed-hf configuration imported directly, before any Auto class
        "import seed_hf; from seed_hf.modeling.configuration_seed_tokenizer import SeedTokenizerConfig",
        "import seed_hf; from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM",
        # a configuration seed-hf's extend, imported first: its import reaches transformers' Auto package half-way
        "import seed_hf; from transformers import LlamaConfig",
        "import seed_hf; from transformers import Blip2VisionConfig",
        "import seed_hf; import transformers.models.llama.modeling_llama",
    ],
)
def test_every_auto_class_and_task_is_registered_whatever_the_import_order(tmp_path, before):
    assert json.loads(_run_python(f"import json; {before}; {REGISTRY_CHECK}", tmp_path)) == REGISTERED


def test_subpackages_are_installed_under_seed_hf_only(tmp_path):
    code = (
        "import importlib.util, json, seed_hf.modeling, seed_hf.pipelines, seed_hf.training; "
        "print(json.dumps([importlib.util.find_spec(n) is None for n in ('modeling', 'pipelines', 'training')]))"
    )
    # the generic folder names must not leak onto sys.path as top-level packages
    assert json.loads(_run_python(code, tmp_path)) == [True, True, True]


def test_unknown_public_attribute_raises_attribute_error():
    import seed_hf

    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        seed_hf.NotAThing  # noqa: B018


def test_cli_help_lists_commands():
    from seed_hf.cli import main

    assert main(["--help"]) == 0
