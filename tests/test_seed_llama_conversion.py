"""Conversion of an official SEED-LLaMA folder (LLaMA layout + tokenizer with image tokens) on a tiny fake one."""

import pytest
import torch
from safetensors.torch import load_file
from seed_llama_fixtures import (
    TINY_NUM_IMAGE_CODES,
    build_text_tokenizer,
    image_code_tokens,
    save_fake_release_checkpoint,
)
from transformers import AutoModel, AutoProcessor, LlamaForCausalLM

import seed_hf  # noqa: F401
from seed_hf.cli import main as cli_main
from seed_hf.convert_llama import CheckpointLayoutError, convert_seed_llama


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return save_fake_release_checkpoint(tmp_path_factory.mktemp("release") / "seed-llama-tiny")


def test_converted_folder_loads_with_auto_classes_and_keeps_the_weights(release, tmp_path):
    output = tmp_path / "converted"
    config = convert_seed_llama(release, output, num_image_codes=TINY_NUM_IMAGE_CODES, chat_template="llama2")
    model = AutoModel.from_pretrained(output)
    processor = AutoProcessor.from_pretrained(output)
    reference = LlamaForCausalLM.from_pretrained(release)
    # ids read from the release tokenizer: codes right after the text vocabulary, then <img>, </img>
    text_vocab = build_text_tokenizer().get_vocab()
    assert config.image_code_start_id == len(text_vocab)
    assert (config.boi_token_id, config.eoi_token_id) == (len(text_vocab) + 64, len(text_vocab) + 65)
    assert config.image_placeholder_id == config.vocab_size  # the placeholder is not an embedding row
    assert processor.image_token_layout == model.image_token_layout
    assert processor.chat_template["default"] == processor.chat_template["llama2"]
    assert model.generation_config.top_p == 0.5 and model.generation_config.do_sample
    # same tensors, and the same logits as the LLaMA it came from
    original = load_file(f"{release}/model.safetensors")
    converted = load_file(output / "model.safetensors")
    assert original.keys() == converted.keys()
    assert all(torch.equal(original[key], converted[key]) for key in original)
    ids = processor.tokenizer(
        ["A photo <img><img_00003><img_00063></img> of a cat"], return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_bin_weights_are_rewritten_as_safetensors(tmp_path):
    release = save_fake_release_checkpoint(tmp_path / "release", safe_serialization=False, seed=1)
    original = torch.load(f"{release}/pytorch_model.bin", weights_only=True)
    convert_seed_llama(release, tmp_path / "out", num_image_codes=TINY_NUM_IMAGE_CODES)
    converted = load_file(tmp_path / "out" / "model.safetensors")
    assert original.keys() == converted.keys()
    assert all(torch.equal(original[key], converted[key]) for key in original)


def test_non_contiguous_image_tokens_are_refused(tmp_path):
    tokenizer = build_text_tokenizer()
    tokens = image_code_tokens(TINY_NUM_IMAGE_CODES)
    tokenizer.add_tokens(tokens[:10] + ["<extra>"] + tokens[10:])  # a foreign token in the middle
    tokenizer.add_tokens(["<img>", "</img>"])
    folder = tmp_path / "broken"
    save_fake_release_checkpoint(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(
        CheckpointLayoutError, match=r"not contiguous from <img_00000>.*misplaced: <img_00010>"
    ):
        convert_seed_llama(folder, tmp_path / "out", num_image_codes=TINY_NUM_IMAGE_CODES)
    assert not (tmp_path / "out").exists()


def test_missing_boi_token_and_wrong_count_are_refused(release, tmp_path):
    tokenizer = build_text_tokenizer()
    tokenizer.add_tokens(image_code_tokens(TINY_NUM_IMAGE_CODES) + ["</img>"])
    folder = tmp_path / "no_boi"
    save_fake_release_checkpoint(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(CheckpointLayoutError, match="no <img> token"):
        convert_seed_llama(folder, tmp_path / "out", num_image_codes=TINY_NUM_IMAGE_CODES)
    with pytest.raises(CheckpointLayoutError, match="expected 8192 image tokens, the tokenizer has 64"):
        convert_seed_llama(release, tmp_path / "out")


def test_existing_output_is_kept_unless_overwrite_and_no_staging_is_left(release, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        convert_seed_llama(release, output, num_image_codes=TINY_NUM_IMAGE_CODES)
    assert (output / "keep.txt").read_text() == "mine"
    assert (
        cli_main(["convert-llama", str(release), str(output), "--num-image-codes", "64", "--overwrite"]) == 0
    )
    assert not (output / "keep.txt").exists() and (output / "config.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # the staging folder was renamed
