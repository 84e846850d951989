"""SEED-LLaMA under the common model and generation tests of transformers (as a model contributed upstream would be
tested), with `LlamaForCausalLM` of the same weights as the control where a behaviour is LLaMA's.

Not applicable here: head-masking, pruning and resize_token_embeddings tests (the image-code rows are part of the
released layout and must not move); TF/Flax equivalence (PyTorch only).
"""

from __future__ import annotations

import pytest
import torch
from seed_llama_fixtures import TINY_TOKENS_PER_IMAGE, build_tiny_seed_llama, build_tiny_tokenizer
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import seed_hf  # noqa: F401


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_seed_llama(tokenizer, seed=0)


def _text_ids(tokenizer, length: int = 12, batch: int = 1) -> torch.LongTensor:
    generator = torch.Generator().manual_seed(length)
    return torch.randint(3, 200, (batch, length), generator=generator)


def _llama_control(model) -> LlamaForCausalLM:
    config = LlamaConfig(**{k: v for k, v in model.config.to_dict().items() if k in LlamaConfig().to_dict()})
    control = LlamaForCausalLM(config).eval()
    control.load_state_dict(model.state_dict())
    return control


# ---------------------------------------------------------------------------------------------------- caches
@pytest.mark.parametrize("cache_argument", ["cache", "past_key_values"])
def test_forward_continues_from_a_cache_under_every_cache_argument(model, tokenizer, cache_argument):
    ids = _text_ids(tokenizer, 10)
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        cache = DynamicCache(config=model.config)
        model(ids[:, :-1], cache=cache, use_cache=True)
        stepped = model(ids[:, -1:], **{cache_argument: cache}, use_cache=True).logits[:, -1]
        control = _llama_control(model)
        control_cache = DynamicCache(config=control.config)
        control(ids[:, :-1], past_key_values=control_cache, use_cache=True)
        control_stepped = control(ids[:, -1:], past_key_values=control_cache, use_cache=True).logits[:, -1]
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(stepped, control_stepped, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_generation_under_each_cache_implementation_equals_generation_without_cache(
    model, tokenizer, cache_implementation
):
    ids = _text_ids(tokenizer, 8)
    budget = {"max_new_tokens": TINY_TOKENS_PER_IMAGE + 4, "do_sample": False, "force_image": True}
    cached = model.generate(ids, cache_implementation=cache_implementation, **budget)
    uncached = model.generate(ids, use_cache=False, **budget)
    assert torch.equal(cached, uncached)


def test_returned_cache_round_trips(model, tokenizer):
    ids = _text_ids(tokenizer, 9)
    with torch.no_grad():
        first = model(ids[:, :5], use_cache=True)
        second = model(ids[:, 5:], cache=first.past_key_values, use_cache=True)
        full = model(ids)
    torch.testing.assert_close(second.logits, full.logits[:, 5:], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------- positions
def test_packed_rows_longer_than_the_context_are_counted_in_positions(tokenizer):
    model = build_tiny_seed_llama(tokenizer, max_position_embeddings=16)
    samples = [_text_ids(tokenizer, 12), _text_ids(tokenizer, 10)]
    packed = torch.cat(
        samples, dim=1
    )  # 22 tokens, positions 0..11 then 0..9: as DataCollatorWithFlattening lays them
    position_ids = torch.cat([torch.arange(12), torch.arange(10)])[None]
    with torch.no_grad():
        packed_logits = model(packed, position_ids=position_ids).logits
        separate = [model(sample).logits for sample in samples]
        with pytest.raises(ValueError, match="reach position 22, past the context"):
            model(packed)
    # the first sample's logits match its own forward (later samples see earlier ones without a flash kernel)
    torch.testing.assert_close(packed_logits[:, :12], separate[0], atol=1e-5, rtol=0)


def test_scaled_rope_accepts_inputs_past_max_position_embeddings(tokenizer):
    model = build_tiny_seed_llama(
        tokenizer,
        max_position_embeddings=16,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
    )
    assert model.context_length is None
    with torch.no_grad():
        assert model(_text_ids(tokenizer, 24)).logits.shape[1] == 24


# ---------------------------------------------------------------------------------------------------- generation
def test_generation_from_inputs_embeds_equals_generation_from_ids(model, tokenizer):
    ids = _text_ids(tokenizer, 8)
    embeds = model.get_input_embeddings()(ids)
    from_ids = model.generate(ids, max_new_tokens=6, do_sample=False)[:, ids.shape[1] :]
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=6, do_sample=False)
    assert torch.equal(from_ids, from_embeds)


def test_an_image_opened_by_an_embeddings_only_prompt_is_continued_with_codes(model, tokenizer):
    layout = model.image_token_layout
    ids = torch.cat([_text_ids(tokenizer, 6), torch.tensor([[layout.boi_token_id]])], dim=1)
    embeds = model.get_input_embeddings()(ids)
    new = model.generate(inputs_embeds=embeds, max_new_tokens=TINY_TOKENS_PER_IMAGE + 1, do_sample=False)
    assert layout.is_code(new[0, :TINY_TOKENS_PER_IMAGE]).all()
    assert new[0, TINY_TOKENS_PER_IMAGE] == layout.eoi_token_id
    from_ids = model.generate(ids, max_new_tokens=TINY_TOKENS_PER_IMAGE + 1, do_sample=False)[
        :, ids.shape[1] :
    ]
    assert torch.equal(new, from_ids)


def test_beam_search_keeps_images_well_formed(model, tokenizer):
    layout = model.image_token_layout
    ids = _text_ids(tokenizer, 6, batch=2)
    new = model.generate(ids, force_image=True, num_beams=3, max_new_tokens=TINY_TOKENS_PER_IMAGE + 2)
    new = new[:, ids.shape[1] :]
    assert (new[:, 0] == layout.boi_token_id).all()
    assert layout.is_code(new[:, 1 : TINY_TOKENS_PER_IMAGE + 1]).all()
    assert (new[:, TINY_TOKENS_PER_IMAGE + 1] == layout.eoi_token_id).all()


# ---------------------------------------------------------------------------------------------------- export
def test_torch_export_of_the_text_path(model, tokenizer):
    ids = _text_ids(tokenizer, 10)
    exported = torch.export.export(
        model, args=(), kwargs={"input_ids": ids, "use_cache": False}, strict=False
    )
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    torch.testing.assert_close(
        exported.module()(input_ids=ids, use_cache=False).logits, expected, atol=1e-5, rtol=0
    )


def test_torch_compile_without_graph_breaks_on_the_text_path(model, tokenizer):
    ids = _text_ids(tokenizer, 10)
    explanation = torch._dynamo.explain(model)(input_ids=ids, use_cache=False)
    assert explanation.graph_break_count == 0, explanation.break_reasons


# ---------------------------------------------------------------------------------------------------- round trips
def test_save_and_load_round_trip(model, tokenizer, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    model.save_pretrained(tmp_path / "model")
    ids = _text_ids(tokenizer, 10)
    with torch.no_grad():
        expected = model(ids).logits
        for auto_class in (AutoModel, AutoModelForCausalLM):
            loaded = auto_class.from_pretrained(tmp_path / "model").eval()
            assert type(loaded) is type(model)
            torch.testing.assert_close(loaded(ids).logits, expected, atol=0, rtol=0)


def test_attention_implementations_agree(model, tokenizer):
    ids = _text_ids(tokenizer, 10, batch=2)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    logits = {}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            logits[implementation] = model(ids, attention_mask=mask).logits[mask.bool()]
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    ids = _text_ids(tokenizer, 10)
    gradients = []
    for checkpointing in (False, True):
        model = build_tiny_seed_llama(tokenizer, seed=3).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert model.supports_gradient_checkpointing and model.is_gradient_checkpointing
    torch.testing.assert_close(gradients[0], gradients[1], atol=1e-6, rtol=0)
