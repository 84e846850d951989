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
