"""Fixtures shared by the SEED-LLaMA training tests: the tiny tokenizer and its image-token layout."""

import pytest
from seed_llama_fixtures import build_tiny_seed_llama, build_tiny_tokenizer

from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def layout(tokenizer):
    return SeedImageTokenLayout.from_config(build_tiny_seed_llama(tokenizer).config)


@pytest.fixture(scope="session")
def shapes_smoke_checkpoint(tmp_path_factory):
    """The checkpoint folder of a `train-shapes --schedule smoke` run (its stage folders beside it), shared by the
    test files that evaluate or probe one: read it, never write into it."""
    from seed_hf.training.shapes.train import train_shapes

    folder = tmp_path_factory.mktemp("shapes_smoke")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(folder / "datasets_cache"))
        train_shapes(folder / "run", "smoke")
    return folder / "run" / "seed_shapes"
