"""SeedLlamaForCausalLM, SeedLlamaProcessor, chat templates, constrained generation and the output parser, on
tiny random models (see seed_llama_fixtures.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from seed_llama_fixtures import (
    TINY_IMAGE_SIZE,
    TINY_NUM_IMAGE_CODES,
    build_tiny_processor,
    build_tiny_seed_llama,
    build_tiny_tokenizer,
    build_tiny_visual_tokenizer,
    save_tiny_seed_llama_folder,
)
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoProcessor,
    LlamaConfig,
    LlamaForCausalLM,
)

import seed_hf  # noqa: F401
from seed_hf.modeling.generation_seed_llama import (
    ImageSegment,
    SeedImageGuidanceLogitsProcessor,
    parse_generation,
)
from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM

N = 32  # tokens per image


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_tiny_processor(tokenizer)


@pytest.fixture(scope="module")
def visual_tokenizer():
    return build_tiny_visual_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer, visual_tokenizer):
    model = build_tiny_seed_llama(tokenizer)
    model.set_visual_tokenizer(visual_tokenizer)
    return model


def random_image(seed: int, size=(40, 52)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8))


def image_tokens(codes) -> str:
    return "<img>" + "".join(f"<img_{int(code):05d}>" for code in codes) + "</img>"


# ---------------------------------------------------------------------------------------------------------------
# model


def test_auto_classes_give_seed_llama(tmp_path):
    folder = save_tiny_seed_llama_folder(tmp_path / "model")
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "SeedLlamaConfig"
    assert type(AutoModel.from_pretrained(folder)) is SeedLlamaForCausalLM
    assert type(AutoModelForCausalLM.from_pretrained(folder)) is SeedLlamaForCausalLM
    assert type(AutoProcessor.from_pretrained(folder)).__name__ == "SeedLlamaProcessor"


def test_text_only_prompts_behave_like_llama_with_the_same_weights(model, tokenizer):
    llama_config = LlamaConfig(
        **{k: v for k, v in model.config.to_dict().items() if k in LlamaConfig().to_dict()}
    )
    llama = LlamaForCausalLM(llama_config).eval()
    llama.load_state_dict(model.state_dict())
    ids = tokenizer(["A photo of a cat sitting on a red sofa."], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, llama(ids).logits)
    kwargs = dict(max_new_tokens=24, do_sample=False)
    assert torch.equal(model.generate(ids, constrain_images=False, **kwargs), llama.generate(ids, **kwargs))


@pytest.mark.parametrize("prompt", ["Describe <image> in detail", "A photo of a cat"])
def test_greedy_generation_with_cache_equals_without(model, processor, prompt):
    images = [random_image(0)] if "<image>" in prompt else None
    inputs = processor(text=prompt, images=images, return_tensors="pt")
    kwargs = dict(max_new_tokens=40, do_sample=False)
    with_cache = model.generate(**inputs, use_cache=True, **kwargs)
    without_cache = model.generate(**inputs, use_cache=False, **kwargs)
    assert with_cache.shape[1] == inputs["input_ids"].shape[1] + 40
    assert torch.equal(with_cache, without_cache)
    forced = dict(force_image=True, **kwargs)
    assert torch.equal(
        model.generate(**inputs, use_cache=True, **forced),
        model.generate(**inputs, use_cache=False, **forced),
    )


def test_pixel_values_are_written_as_codes_in_the_placeholders(model, processor, visual_tokenizer):
    images = [random_image(1), random_image(2)]
    inputs = processor(text=["first <image> then <image>"], images=images, return_tensors="pt")
    codes = visual_tokenizer.encode(inputs["pixel_values"])
    # the same prompt written with the codes' tokens directly
    text = f"first {image_tokens(codes[0])} then {image_tokens(codes[1])}"
    direct = processor.tokenizer([text], return_tensors="pt").input_ids
    merged = model.merge_image_codes(inputs["input_ids"], pixel_values=inputs["pixel_values"])
    assert torch.equal(merged, direct)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(direct).logits)
        assert torch.equal(model(inputs["input_ids"], image_codes=codes).logits, model(direct).logits)


class _CountingVisualTokenizer(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def encode(self, pixel_values):
        self.calls += 1
        return self.inner.encode(pixel_values)


def test_pixels_are_encoded_in_the_prefill_step_only(tokenizer, processor, visual_tokenizer):
    model = build_tiny_seed_llama(tokenizer)
    counting = _CountingVisualTokenizer(visual_tokenizer)
    model.set_visual_tokenizer(counting)
    inputs = processor(text="Describe <image>", images=random_image(7), return_tensors="pt")
    model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert counting.calls == 1


def test_visual_tokenizer_stays_out_of_the_llm_weights(model):
    assert isinstance(model.visual_tokenizer, torch.nn.Module)
    assert not any(name.startswith(("visual", "_visual")) for name in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in model.state_dict().values())


_FRESH_PROCESS = """
import json, sys, torch
import seed_hf
from transformers import AutoModel, AutoProcessor
from PIL import Image
folder, out = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder).eval()
processor = AutoProcessor.from_pretrained(folder)
image = Image.open(folder + "/../image.png")
inputs = processor(text="Look at <image> please", images=image, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
torch.save({"logits": logits, "input_ids": inputs["input_ids"]}, out)
print(json.dumps({"visual_in_state_dict": any("visual" in k for k in model.state_dict()),
                  "visual_tokenizer": type(model.visual_tokenizer).__name__}))
"""


def test_save_then_load_in_a_fresh_process_gives_identical_logits(tmp_path):
    folder = save_tiny_seed_llama_folder(tmp_path / "model")
    image = random_image(3)
    image.save(tmp_path / "image.png")
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(
        text="Look at <image> please", images=Image.open(tmp_path / "image.png"), return_tensors="pt"
    )
    with torch.no_grad():
        expected = model(**inputs).logits
    out = tmp_path / "fresh.pt"
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, folder, str(out)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"visual_in_state_dict": False, "visual_tokenizer": "SeedTokenizerModel"}
    fresh = torch.load(out)
    assert torch.equal(fresh["input_ids"], inputs["input_ids"])
    assert torch.equal(fresh["logits"], expected)


# ---------------------------------------------------------------------------------------------------------------
# bad input


def test_image_count_not_matching_the_placeholders_raises(model, processor):
    with pytest.raises(ValueError, match="number of <image> tokens"):
        processor(text="one <image> only", images=[random_image(0), random_image(1)])
    with pytest.raises(ValueError, match="no images were passed"):
        processor(text="one <image> only")
    inputs = processor(text="one <image> only", images=random_image(0), return_tensors="pt")
    two_images = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(
        ValueError, match=r"hold 32 image placeholder tokens, i\.e\. 1 images .* pixel_values holds 2"
    ):
        model(inputs["input_ids"], pixel_values=two_images)
    with pytest.raises(ValueError, match="neither pixel_values nor image_codes"):
        model(inputs["input_ids"])


def test_codes_out_of_range_raise(model, processor):
    bad = torch.zeros(N, dtype=torch.long)
    bad[5] = TINY_NUM_IMAGE_CODES
    with pytest.raises(ValueError, match=r"image_codes must lie in \[0, 64\), got values in \[0, 64\]"):
        processor.format_image(bad)
    conversation = [{"role": "user", "content": [{"type": "image", "codes": bad}]}]
    with pytest.raises(ValueError, match=r"codes of a chat image must lie in \[0, 64\)"):
        processor.apply_chat_template(conversation)
    ids = processor(text="x <image>", images=random_image(0), return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match=r"image_codes must lie in \[0, 64\)"):
        model(ids, image_codes=bad - 1)
    with pytest.raises(ValueError, match=r"image_codes must have shape \[num_images, 32\]"):
        model(ids, image_codes=torch.zeros(1, 31, dtype=torch.long))


def test_prompt_longer_than_the_context_raises(model):
    context = model.config.max_position_embeddings
    ids = torch.full((1, context + 1), 40, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"the inputs reach position {context + 1}, past the context"):
        model(ids)
    with pytest.raises(ValueError, match=rf"the prompt has {context} tokens"):
        model.generate(ids[:, :context], max_new_tokens=2)


# ---------------------------------------------------------------------------------------------------------------
# constrained decoding


def test_sampled_images_are_always_complete_with_constraints(model, processor):
    count = 200
    ids = processor.tokenizer(["Draw a mountain at sunset."] * count, return_tensors="pt").input_ids
    torch.manual_seed(0)
    out = model.generate(ids, do_sample=True, temperature=2.0, max_new_tokens=80, force_image=True)
    images, others = 0, 0
    for row in processor.parse_generation(out[:, ids.shape[1] :]):
        assert isinstance(row[0], ImageSegment)  # forced: the answer starts with an image
        for segment in row:
            if isinstance(segment, ImageSegment):
                images += 1
                assert segment.complete, segment
        others += sum(not isinstance(segment, ImageSegment) for segment in row)
    assert images >= count and others > 0


def test_images_are_not_opened_without_room_to_finish_them(model, tokenizer):
    # the prompt ends with <img> so that the unconstrained model would write images; a budget of 20 new tokens
    # cannot hold one, and the constraints never start one (the prompt's own image is finished instead)
    ids = tokenizer(["Here is <img>"] * 50, return_tensors="pt").input_ids
    torch.manual_seed(1)
    out = model.generate(ids, do_sample=True, temperature=2.0, max_new_tokens=N + 1 + 20)
    layout = model.image_token_layout
    new = out[:, ids.shape[1] :]
    assert layout.is_code(new[:, :N]).all() and (new[:, N] == layout.eoi_token_id).all()
    assert not (new[:, N + 1 :] == layout.boi_token_id).any()


def test_force_image_needs_room_for_an_image(model, tokenizer):
    ids = tokenizer(["Draw"], return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="force_image needs room for a whole image"):
        model.generate(ids, max_new_tokens=N, force_image=True)


def test_image_guidance_changes_only_image_scores(model, tokenizer):
    layout = model.image_token_layout
    negative = tokenizer(["<img>"], return_tensors="pt").input_ids
    prompt = tokenizer(["Draw a cat <img>", "Draw a cat </img>"], return_tensors="pt").input_ids
    scale = 3.0
    guidance = SeedImageGuidanceLogitsProcessor(scale, model, layout, unconditional_ids=negative)
    scores = torch.randn(2, model.config.vocab_size)
    guided = guidance(prompt, scores)
    with torch.no_grad():
        unconditional = torch.log_softmax(model(negative).logits[:, -1], -1)
    conditional = torch.log_softmax(scores[0], -1)
    torch.testing.assert_close(guided[0], scale * (conditional - unconditional[0]) + unconditional[0])
    assert torch.equal(guided[1], scores[1])  # outside an image: untouched


def test_generation_with_image_guidance_yields_complete_images(model, tokenizer):
    ids = tokenizer(["Draw a dog."] * 4, return_tensors="pt").input_ids
    torch.manual_seed(0)
    out = model.generate(
        ids, do_sample=True, max_new_tokens=40, force_image=True, image_guidance_scale=4.0,
        image_negative_prompt_ids=tokenizer(["<img>"], return_tensors="pt").input_ids,
    )  # fmt: skip
    layout = model.image_token_layout
    for row in out[:, ids.shape[1] :]:
        image = parse_generation(row, layout)[0]
        assert image.complete


# ---------------------------------------------------------------------------------------------------------------
# parser


def test_parser_reports_truncated_and_malformed_images(model, tokenizer):
    layout = model.image_token_layout
    code = layout.image_code_start_id
    boi, eoi = layout.boi_token_id, layout.eoi_token_id
    text = tokenizer("A cat", add_special_tokens=False).input_ids
    ids = [
        *text,
        boi,
        *range(code, code + N),
        eoi,
        boi,
        code + 5,
        code + 6,
        *text,
        code + 7,
        eoi,
        boi,
        code + 9,
    ]
    segments = parse_generation(torch.tensor(ids), layout, tokenizer)
    assert [type(s).__name__ for s in segments] == [
        "str",
        "ImageSegment",
        "ImageSegment",
        "str",
        "ImageSegment",
        "ImageSegment",
    ]
    first, cut, stray, last = segments[1], segments[2], segments[4], segments[5]
    assert segments[0] == segments[3] == "A cat"
    assert first.complete and torch.equal(first.codes, torch.arange(N))
    assert cut.truncated and not cut.closed and cut.codes.tolist() == [5, 6]
    assert not stray.opened and stray.closed and stray.codes.tolist() == [7] and not stray.complete
    assert last.truncated and last.codes.tolist() == [9]
    overlong = parse_generation(torch.tensor([boi, *range(code, code + N + 1), eoi]), layout)[0]
    assert not overlong.complete and not overlong.truncated and overlong.num_codes == N + 1


# ---------------------------------------------------------------------------------------------------------------
# processor and chat templates

_CONVERSATION_TEXTS = {
    # the released instruction formats, written out by hand
    "vicuna": [
        "Answer briefly.\nUSER: ",
        "What is this?\nASSISTANT:A cat.\nUSER: Compare ",
        " with ",
        "\nASSISTANT:The second one, drawn here: ",
        "",
    ],
    "llama2": [
        "[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>\n\n",
        "What is this? [/INST]A cat.\n[INST] Compare ",
        " with ",
        " [/INST]The second one, drawn here: ",
        "",
    ],
}


@pytest.mark.parametrize("template", ["vicuna", "llama2"])
def test_chat_template_renders_multi_turn_multi_image_and_round_trips(
    model, processor, visual_tokenizer, template
):
    torch.manual_seed(0)
    given_codes = [torch.randint(0, TINY_NUM_IMAGE_CODES, (N,)) for _ in range(2)]
    pixel_image = random_image(4)
    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "image", "codes": given_codes[0]}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image", "image": pixel_image},
                {"type": "text", "text": " with "},
                {"type": "image", "codes": given_codes[1].tolist()},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "The second one, drawn here: "}, {"type": "image", "codes": given_codes[1]}]},
    ]  # fmt: skip
    inputs = processor.apply_chat_template(
        conversation, chat_template=template, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["input_ids"][0, 0] == processor.tokenizer.bos_token_id
    assert inputs["input_ids"][0, -1] == processor.tokenizer.eos_token_id
    pixel_codes = visual_tokenizer.encode(inputs["pixel_values"])[0]
    ids = model.merge_image_codes(inputs["input_ids"], pixel_values=inputs["pixel_values"])
    segments = processor.parse_generation(ids[0])
    texts = _CONVERSATION_TEXTS[template]
    expected_codes = [given_codes[0], pixel_codes, given_codes[1], given_codes[1]]
    assert len(segments) == 2 * len(expected_codes)
    for index, codes in enumerate(expected_codes):
        assert segments[2 * index] == texts[index]
        image = segments[2 * index + 1]
        assert isinstance(image, ImageSegment) and image.complete and torch.equal(image.codes, codes)


def test_processor_saves_both_chat_templates(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == processor.chat_template
    assert set(loaded.chat_template) == {"default", "vicuna", "llama2"}
    assert loaded.image_token_layout == processor.image_token_layout
    assert loaded.image_processor.size == {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}


def test_generate_end_to_end_from_processor_output(model, processor):
    inputs = processor(text=["Describe <image>", "Draw <image> again"], images=[random_image(5), random_image(6)],
                       return_tensors="pt", padding=True)  # fmt: skip
    out = model.generate(**inputs, max_new_tokens=36, do_sample=False, force_image=True)
    for row in processor.parse_generation(out[:, inputs["input_ids"].shape[1] :]):
        assert isinstance(row[0], ImageSegment) and row[0].complete
