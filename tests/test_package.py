import json
import subprocess
import sys

import pytest


def _run_python(code: str, cwd) -> str:
    # run from outside the checkout so that only the installed package is importable
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
    return result.stdout


def test_import_does_not_load_heavy_optional_dependencies(tmp_path):
    loaded = json.loads(
        _run_python(
            "import json, sys; import seed_hf; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'diffusers'))))",
            tmp_path,
        )
    )
    assert loaded == []


def test_subpackages_are_installed_under_seed_hf_only(tmp_path):
    code = (
        "import importlib.util, json, seed_hf.modeling, seed_hf.pipelines, seed_hf.training; "
        "print(json.dumps([importlib.util.find_spec(n) is None for n in ('modeling', 'pipelines', 'training')]))"
    )
    # the generic folder names must not leak onto sys.path as top-level packages
    assert json.loads(_run_python(code, tmp_path)) == [True, True, True]


def test_auto_config_knows_seed_tokenizer():
    from transformers import AutoConfig

    import seed_hf  # noqa: F401

    assert type(AutoConfig.for_model("seed_tokenizer")).__name__ == "SeedTokenizerConfig"


def test_unknown_public_attribute_raises_attribute_error():
    import seed_hf

    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        seed_hf.NotAThing  # noqa: B018


def test_cli_help_lists_commands():
    from seed_hf.cli import main

    assert main(["--help"]) == 0
