"""The fast paths of SEED-LLaMA drawing give the tokens of the plain path: the incremental image tracker, the
sliced LM head inside images (greedy, seeded sampling), and static-cache `torch.compile` decoding (no graph break,
identical outputs). Tiny random models (see seed_llama_fixtures.py); nothing here is timed."""

import pytest
import torch
from seed_llama_fixtures import build_tiny_seed_llama, build_tiny_tokenizer
from transformers import CompileConfig, LlamaConfig, LlamaForCausalLM, TopKLogitsWarper

from seed_hf.modeling.generation_seed_llama import (
    SeedGeneratorSamplingLogitsProcessor,
    SeedImageConstraintLogitsProcessor,
    SeedImageSpanTracker,
    image_progress,
)

N = 32  # tokens per image
NEW_TOKENS = 80


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_seed_llama(tokenizer)


@pytest.fixture(scope="module")
def stock(model):
    """Plain transformers LLaMA with the same weights: the full-vocabulary path."""
    fields = LlamaConfig().to_dict()
    config = LlamaConfig(**{key: value for key, value in model.config.to_dict().items() if key in fields})
    stock = LlamaForCausalLM(config).eval()
    stock.load_state_dict(model.state_dict())
    return stock


@pytest.fixture
def vocab_ranges(model):
    """The `logits_vocab_range` of every forward call of `model` during the test."""
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("logits_vocab_range")), with_kwargs=True
    )
    yield seen
    handle.remove()


def prompts(tokenizer, texts=("Paint a dog", "Draw a dog")):
    return tokenizer(list(texts), return_tensors="pt").input_ids


def full_vocabulary_generate(stock, model, ids, force_image, processors=(), **kwargs):
    """`generate` of the stock model with a constraint processor that rescans the ids at every step."""
    constraints = SeedImageConstraintLogitsProcessor(
        model.image_token_layout, ids.shape[1], ids.shape[1] + NEW_TOKENS, force_image=force_image
    )
    return stock.generate(
        ids, max_new_tokens=NEW_TOKENS, logits_processor=[constraints, *processors], **kwargs
    )


# ---------------------------------------------------------------------------------------------------------------
# tracker


def test_incremental_tracker_agrees_with_a_rescan_at_every_step(model):
    layout = model.image_token_layout
    generator = torch.Generator().manual_seed(0)
    # ids rich in <img>, </img> and codes: images opened, closed, cut, reopened, and left open past their length
    choices = torch.tensor([layout.boi_token_id, layout.eoi_token_id, 5, 7, *range(320, 330)])
    ids = choices[torch.randint(len(choices), (6, 150), generator=generator)]
    ids[:3, 40:] = 5  # an image opened before runs past tokens_per_image: no longer open
    ids[:3, 39] = layout.boi_token_id
    tail = torch.full((6, 4), -1)
    tail[::2, -1] = layout.boi_token_id
    tracker = SeedImageSpanTracker(layout, prompt_tail_ids=tail)
    assert torch.equal(tracker(ids[:, :10]), image_progress(torch.cat([tail, ids[:, :10]], 1), layout))
    for length in range(11, ids.shape[1] + 1):
        expected = image_progress(torch.cat([tail, ids[:, :length]], 1), layout)
        assert torch.equal(tracker(ids[:, :length]), expected), length
    assert (expected >= 0).any() and (expected < 0).any()


def test_processor_refuses_a_prompt_tail_beside_a_tracker(model):
    layout = model.image_token_layout
    with pytest.raises(ValueError, match="give prompt_tail_ids to the tracker"):
        SeedImageConstraintLogitsProcessor(
            layout, prompt_tail_ids=torch.zeros(1, 2, dtype=torch.long), tracker=SeedImageSpanTracker(layout)
        )


# ---------------------------------------------------------------------------------------------------------------
# sliced LM head


def test_forward_with_a_vocab_range_computes_exactly_those_logits(model, tokenizer):
    ids = prompts(tokenizer)
    with torch.no_grad():
        full = model(ids).logits
        narrow = model(ids, logits_vocab_range=(320, 386)).logits
    assert torch.equal(narrow[..., 320:386], full[..., 320:386])
    assert narrow.shape == full.shape
    assert torch.isneginf(narrow[..., :320]).all() and torch.isneginf(narrow[..., 386:]).all()


def test_forward_refuses_labels_with_a_vocab_range(model, tokenizer):
    ids = prompts(tokenizer)
    with pytest.raises(ValueError, match="logits_vocab_range leaves out logits the loss needs"):
        model(ids, labels=ids, logits_vocab_range=(320, 386))


@pytest.mark.parametrize("force_image", [True, False])
def test_greedy_drawing_with_the_sliced_head_gives_the_full_vocabulary_tokens(
    model, stock, tokenizer, vocab_ranges, force_image
):
    # without force_image the prompts end inside an image, so the rows start in one
    ids = prompts(
        tokenizer, ("Draw <img>", "A cat <img>") if not force_image else ("Paint a dog", "Draw a dog")
    )
    with torch.no_grad():
        ours = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, force_image=force_image)
        expected = full_vocabulary_generate(stock, model, ids, force_image, do_sample=False)
    assert torch.equal(ours, expected)
    layout = model.image_token_layout
    assert vocab_ranges.count((layout.image_code_start_id, layout.eoi_token_id + 1)) >= N
    assert None in vocab_ranges  # text after the image: the whole head


def test_seeded_sampling_with_the_sliced_head_gives_the_full_vocabulary_tokens(
    model, stock, tokenizer, vocab_ranges
):
    ids = prompts(tokenizer)
    for seed in range(3):
        # as the pipelines sample: warpers, then Gumbel noise from a generator, after the constraints
        ours_sampling = [
            TopKLogitsWarper(20),
            SeedGeneratorSamplingLogitsProcessor(torch.Generator().manual_seed(seed)),
        ]
        stock_sampling = [
            TopKLogitsWarper(20),
            SeedGeneratorSamplingLogitsProcessor(torch.Generator().manual_seed(seed)),
        ]
        with torch.no_grad():
            ours = model.generate(
                ids,
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                force_image=True,
                logits_processor=ours_sampling,
            )
            expected = full_vocabulary_generate(stock, model, ids, True, stock_sampling, do_sample=False)
        assert torch.equal(ours, expected), seed
    assert any(rows is not None for rows in vocab_ranges)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"do_sample": True, "top_k": 10},  # transformers' warpers read all logits
        {"do_sample": False, "output_logits": True, "return_dict_in_generate": True},  # raw logits returned
        {"do_sample": False, "num_beams": 2},  # beams reorder rows: the tracker rescans
    ],
    ids=["sampling", "output_logits", "beams"],
)
def test_paths_that_need_every_logit_use_the_whole_head_and_give_the_same_tokens(
    model, stock, tokenizer, vocab_ranges, kwargs
):
    ids = prompts(tokenizer)
    with torch.no_grad():
        torch.manual_seed(0)
        ours = model.generate(ids, max_new_tokens=NEW_TOKENS, force_image=True, **kwargs)
        torch.manual_seed(0)
        expected = full_vocabulary_generate(stock, model, ids, True, **kwargs)
    if kwargs.get("return_dict_in_generate"):
        assert all(torch.equal(a, b) for a, b in zip(ours.logits, expected.logits, strict=True))
        ours, expected = ours.sequences, expected.sequences
    assert torch.equal(ours, expected)
    assert set(vocab_ranges) == {None}


# ---------------------------------------------------------------------------------------------------------------
# static cache + torch.compile


@pytest.mark.parametrize(
    "kwargs", [{"constrain_images": False}, {"force_image": True}], ids=["text", "image"]
)
def test_compiled_static_cache_decoding_has_no_graph_break_and_equals_eager(model, tokenizer, kwargs):
    ids = prompts(tokenizer)
    # fullgraph: a graph break raises; the eager backend runs the traced graph as it is (fast to build)
    config = CompileConfig(fullgraph=True, dynamic=False, backend="eager", mode=None)
    config._compile_all_devices = True  # transformers compiles the decoding step on accelerators only
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model.generate(
            ids, max_new_tokens=40, do_sample=False, cache_implementation="static", **kwargs
        )
        compiled = model.generate(
            ids,
            max_new_tokens=40,
            do_sample=False,
            cache_implementation="static",
            compile_config=config,
            **kwargs,
        )
    assert torch.equal(compiled, eager)
    assert hasattr(model, "_compiled_call")  # the decoding steps did run compiled


def test_a_prompt_with_image_codes_compiles_in_one_graph(model, tokenizer):
    layout = model.image_token_layout
    image = [layout.boi_token_id, *[layout.image_placeholder_id] * N, layout.eoi_token_id]
    ids = torch.cat([prompts(tokenizer)[:1], torch.tensor([image])], dim=1)
    codes = torch.randint(0, layout.num_image_codes, (1, N), generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    compiled = torch.compile(model.forward, fullgraph=True, dynamic=False, backend="eager")
    with torch.no_grad():
        assert torch.equal(compiled(ids, image_codes=codes).logits, model(ids, image_codes=codes).logits)


@pytest.mark.slow
def test_inductor_compiled_drawing_equals_eager(model, tokenizer):
    ids = prompts(tokenizer)
    torch._dynamo.reset()
    compiled_forward = torch.compile(model.forward, fullgraph=True, dynamic=False)
    eager_forward = model.forward
    with torch.no_grad():
        eager = model.generate(ids, max_new_tokens=40, force_image=True, cache_implementation="static")
        model.forward = compiled_forward
        try:
            compiled = model.generate(ids, max_new_tokens=40, force_image=True, cache_implementation="static")
        finally:
            model.forward = eager_forward
    assert torch.equal(compiled, eager)
