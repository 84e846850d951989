"""`seed-hf convert-release` on a warm, offline Hugging Face cache holding tiny stand-ins of the three release repos
(with the release's file names, plus decoys that must never be fetched)."""

import json
import re
from pathlib import Path

import pytest
import seed_unclip_fixtures
import torch
import yaml
from hub_cache import lay_into_cache
from safetensors.torch import load_file
from seed_llama_fixtures import TINY_NUM_IMAGE_CODES, save_fake_release_checkpoint
from transformers import (
    AutoModel,
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

import seed_hf  # noqa: F401
from seed_hf.cli import main as cli_main
from seed_hf.convert_release import (
    RELEASE_LLM_REPO,
    RELEASE_TOKENIZER_REPO,
    RELEASE_UNCLIP_REPO,
    ReleaseConversionError,
    convert_release,
    fetch_release,
)

FIXTURE = Path(__file__).parent / "fixtures" / "seed-reference" / "tiny-a"
FIXTURE_CONFIG = json.loads((FIXTURE / "config.json").read_text())
TEXT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what the fast stand-in saves
# files of the stand-in repos that the conversion must never fetch
DECOYS = {
    RELEASE_TOKENIZER_REPO: ["README.md", "checkpoints/optimizer.pt"],
    RELEASE_LLM_REPO: ["README.md", "training_args.bin"],
    RELEASE_UNCLIP_REPO: [
        "image_encoder/config.json",
        "image_encoder/model.safetensors",
        "feature_extractor/preprocessor_config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
    ],
}


def _tokenizer_repo(root: Path, llm_release: Path) -> dict[str, Path]:
    """seed-tokenizer-2: seed_quantizer.pt (a torch.save of the authors' state dict) + the SEED-LLaMA text tokenizer."""
    state_dict = load_file(str(FIXTURE / "original_state_dict.safetensors"))
    root.mkdir()
    torch.save(state_dict, root / "seed_quantizer.pt")
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    (root / "optimizer.pt").write_bytes(b"not a checkpoint")
    files = {"seed_quantizer.pt": root / "seed_quantizer.pt", "README.md": root / "README.md"}
    files["checkpoints/optimizer.pt"] = root / "optimizer.pt"
    files.update({name: llm_release / name for name in TEXT_TOKENIZER_FILES if (llm_release / name).exists()})
    return files


def _llm_repo(root: Path, llm_release: Path) -> dict[str, Path]:
    """seed-llama-8b-sft: config, generation config, `pytorch_model-0000N-of-00002.bin` shards + index; no tokenizer."""
    root.mkdir()
    state_dict = torch.load(llm_release / "pytorch_model.bin", weights_only=True)
    keys = sorted(state_dict)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2]}
    shards["pytorch_model-00002-of-00002.bin"] = keys[len(keys) // 2 :]
    weight_map = {}
    for name, shard_keys in shards.items():
        torch.save({key: state_dict[key] for key in shard_keys}, root / name)
        weight_map.update(dict.fromkeys(shard_keys, name))
    (root / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    (root / "README.md").write_text("---\nlicense: llama2\n---\n")
    (root / "training_args.bin").write_bytes(b"decoy")
    names = [
        *shards,
        "pytorch_model.bin.index.json",
        "generation_config.json",
        "README.md",
        "training_args.bin",
    ]
    return {"config.json": llm_release / "config.json", **{name: root / name for name in names}}


def _unclip_repo(root: Path) -> Path:
    """stable-diffusion-2-1-unclip: a StableUnCLIPImg2ImgPipeline folder (with its CLIP image encoder) whose image
    embedding size is the fixture's generation embedding size, plus other weight formats of some components."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seed_unclip_fixtures, "EMBEDDING_DIM", FIXTURE_CONFIG["generation_embedding_dim"])
        components = seed_unclip_fixtures.tiny_unclip_components()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
            projection_dim=FIXTURE_CONFIG["generation_embedding_dim"],
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=16, size=16)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=feature_extractor, image_encoder=image_encoder, **components
    )
    pipe.save_pretrained(root)
    torch.save(components["unet"].state_dict(), root / "unet" / "diffusion_pytorch_model.bin")
    (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"decoy variant")
    torch.save(components["text_encoder"].state_dict(), root / "text_encoder" / "pytorch_model.bin")
    return root


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("stand-ins")
    llm_release = Path(save_fake_release_checkpoint(root / "llm-release", safe_serialization=False))
    cache = root / "hub"
    lay_into_cache(cache, RELEASE_TOKENIZER_REPO, _tokenizer_repo(root / "tokenizer", llm_release))
    lay_into_cache(cache, RELEASE_LLM_REPO, _llm_repo(root / "llm", llm_release))
    lay_into_cache(cache, RELEASE_UNCLIP_REPO, _unclip_repo(root / "unclip"))
    # a revision of the LLM repo with both formats and its own tokenizer: safetensors and the LLM's tokenizer win
    both = {name: llm_release / name for name in ("config.json", "pytorch_model.bin", *TEXT_TOKENIZER_FILES)}
    save_fake_release_checkpoint(root / "llm-safetensors", seed=1)
    both["model.safetensors"] = root / "llm-safetensors" / "model.safetensors"
    lay_into_cache(cache, RELEASE_LLM_REPO, both, revision="safetensors")
    # a revision with a stray tokenizer file but no vocabulary: the tokenizer repo's tokenizer is used, unmixed
    (root / "special_tokens_map.json").write_text(json.dumps({"unk_token": "<stray>"}))
    partial = {name: llm_release / name for name in ("config.json", "pytorch_model.bin")}
    partial["special_tokens_map.json"] = root / "special_tokens_map.json"
    lay_into_cache(cache, RELEASE_LLM_REPO, partial, revision="stray-tokenizer-file")
    return cache


@pytest.fixture(scope="module")
def converted(hub_cache, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / "seed-release"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        convert_release(
            output,
            cache_dir=hub_cache,
            tokenizer_config=FIXTURE / "config.json",
            tokenizer_reference=FIXTURE,
        )
    return output


def test_fetch_selects_only_the_needed_files(hub_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources = fetch_release(tmp_path / "sources", cache_dir=hub_cache)
    assert sources.files[RELEASE_TOKENIZER_REPO] == sorted(["seed_quantizer.pt", *TEXT_TOKENIZER_FILES])
    assert sources.files[RELEASE_LLM_REPO] == [
        "config.json",
        "generation_config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ]
    assert (
        sources.text_tokenizer_repo == RELEASE_TOKENIZER_REPO
    )  # the -sft release has no tokenizer of its own
    unclip = sources.files[RELEASE_UNCLIP_REPO]
    assert {name.split("/")[0] for name in unclip} == {
        "model_index.json",
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "image_normalizer",
        "image_noising_scheduler",
    }
    assert [name for name in unclip if name.endswith((".bin", ".safetensors"))] == [
        "image_normalizer/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    # the views the converters read hold nothing else
    for repo_id, view in (
        (RELEASE_TOKENIZER_REPO, sources.tokenizer_dir),
        (RELEASE_LLM_REPO, sources.llm_dir),
        (RELEASE_UNCLIP_REPO, sources.unclip_dir),
    ):
        present = {path.relative_to(view).as_posix() for path in view.rglob("*") if path.is_file()}
        assert not present & set(DECOYS[repo_id]), repo_id
    assert not (sources.unclip_dir / "image_encoder").exists()
    assert not (sources.unclip_dir / "feature_extractor").exists()
    assert {p.name for p in sources.llm_dir.iterdir()} >= set(TEXT_TOKENIZER_FILES)

    safetensors = fetch_release(tmp_path / "other", cache_dir=hub_cache, revision_llm="safetensors")
    assert safetensors.files[RELEASE_LLM_REPO] == sorted(
        ["config.json", "model.safetensors", *TEXT_TOKENIZER_FILES]
    )
    assert safetensors.text_tokenizer_repo == RELEASE_LLM_REPO

    stray = fetch_release(tmp_path / "stray", cache_dir=hub_cache, revision_llm="stray-tokenizer-file")
    assert stray.files[RELEASE_LLM_REPO] == ["config.json", "pytorch_model.bin"]
    assert stray.text_tokenizer_repo == RELEASE_TOKENIZER_REPO
    assert sorted(p.name for p in stray.llm_dir.iterdir()) == sorted(
        ["config.json", "pytorch_model.bin", *TEXT_TOKENIZER_FILES]
    )


def test_converted_folder_loads_and_reproduces_the_reference(converted):
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    model = AutoModel.from_pretrained(converted)
    processor = AutoProcessor.from_pretrained(converted)
    visual_tokenizer = AutoModel.from_pretrained(converted / "visual_tokenizer")
    assert type(model).__name__ == "SeedLlamaForCausalLM"
    assert type(visual_tokenizer).__name__ == "SeedTokenizerModel"
    assert model.config.num_image_codes == TINY_NUM_IMAGE_CODES == visual_tokenizer.config.num_codes
    assert processor.image_processor.size == {"height": 56, "width": 56}  # the tokenizer's image size
    # the tokenizer reproduces the authors' codes on their fixture inputs
    inputs = load_file(str(FIXTURE / "inputs.safetensors"))
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    assert torch.equal(visual_tokenizer.encode(inputs["pixel_values"]), expected["codes"])
    # a prompt with an image through the processor's chat template
    image = _photo()
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}
    ]
    batch = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()
    # the de-tokenizer draws from codes
    pipe = SeedUnCLIPPipeline.from_pretrained(converted / "detokenizer", seed_tokenizer=visual_tokenizer)
    pipe.set_progress_bar_config(disable=True)
    drawn = pipe(
        image_codes=expected["codes"][:1], num_inference_steps=2, height=8, width=8, output_type="np"
    )
    assert drawn.images.shape == (1, 8, 8, 3)
    # nothing of the decoys, no pickles, no CLIP image encoder
    names = {path.relative_to(converted).as_posix() for path in converted.rglob("*") if path.is_file()}
    assert not [name for name in names if name.endswith((".bin", ".pt"))]
    assert not [name for name in names if "image_encoder" in name or "feature_extractor" in name]
    assert not [
        p.name for p in converted.parent.iterdir() if p.name.startswith(".")
    ]  # no staging or work left


def test_converted_folder_loads_by_repo_id_with_and_without_the_package(converted, tmp_path, monkeypatch):
    """The same load checks as the shipped checkpoint's: by repo id from a warm cache, and through its own remote
    code where seed-hf is not installed (same logits)."""
    import os
    import subprocess

    import huggingface_hub.constants
    from hub_cache import environment_without_seed_hf

    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    cache = tmp_path / "hub"
    lay_into_cache(cache, "org/seed-converted", converted)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = AutoModel.from_pretrained("org/seed-converted")
    processor = AutoProcessor.from_pretrained("org/seed-converted")
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": _photo()}, {"type": "text", "text": "Hi"}]}
    ]
    batch = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits[0, -1]
    pipe = SeedUnCLIPPipeline.from_pretrained("org/seed-converted", subfolder="detokenizer")
    assert pipe.seed_tokenizer is not None
    python = environment_without_seed_hf(tmp_path / "venv")
    script = (
        "import sys, json, huggingface_hub.constants as c; c.HF_HUB_CACHE = sys.argv[1]\n"
        "import torch\n"
        "from PIL import Image\n"
        "from transformers import AutoModel, AutoProcessor\n"
        "model = AutoModel.from_pretrained('org/seed-converted', trust_remote_code=True)\n"
        "processor = AutoProcessor.from_pretrained('org/seed-converted', trust_remote_code=True)\n"
        "image = Image.open(sys.argv[2])\n"
        "conversation = [{'role': 'user', 'content': [{'type': 'image', 'image': image}, {'type': 'text', 'text': 'Hi'}]}]\n"
        "batch = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors='pt')\n"
        "print(json.dumps(model(**batch).logits[0, -1].tolist()))\n"
    )
    _photo().save(tmp_path / "photo.png")
    result = subprocess.run(
        [python, "-c", script, str(cache), str(tmp_path / "photo.png")],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    assert (logits - remote).abs().max() <= 1e-5


def _card_metadata(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n"), path
    return yaml.safe_load(text.split("---\n")[1])


def test_cards_name_the_release_repos_as_base_models_with_the_parity(converted):
    expected = {
        "": RELEASE_LLM_REPO,
        "visual_tokenizer": RELEASE_TOKENIZER_REPO,
        "detokenizer": RELEASE_UNCLIP_REPO,
    }
    for part, repo_id in expected.items():
        assert _card_metadata(converted / part / "README.md")["base_model"] == repo_id, part
    # the parity evidence gathered during the conversion is in the card
    card = (converted / "README.md").read_text()
    assert re.search(
        r"\| LLM logits, release LLaMA vs converted SEED-LLaMA \(max-abs\) \| 0 on \d+ tokens", card
    )
    assert "| 128/128 codes identical to the authors' reference outputs (4 images, tiny-a)" in card


def _error_lines(capsys) -> list[str]:
    # stderr also carries the progress bar; the error is one line of its own
    return [line for line in capsys.readouterr().err.splitlines() if "convert-release: error:" in line]


def test_cli_errors_are_one_line_and_name_the_argument(hub_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["convert-release", "--cache-dir", str(hub_cache), "--output-dir", str(tmp_path / "out")]
    assert cli_main([*common, "--llm", "not a repo"]) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith("seed-hf convert-release: error: `llm_repo` (--llm) is not a valid Hub repo id")
    assert cli_main([*common, "--unclip", "someone/not-in-the-cache"]) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith(
        "seed-hf convert-release: error: cannot fetch someone/not-in-the-cache (`unclip_repo` (--unclip))"
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert cli_main(common) == 2
    (line,) = _error_lines(capsys)
    assert "`output_dir` (--output-dir)" in line and "pass overwrite=True (--overwrite)" in line
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match=r"`dtype` \(--dtype\) must be one of"):
        convert_release(tmp_path / "x", dtype="float8")
    with pytest.raises(ValueError, match=r"`tokenizer_reference` \(--tokenizer-reference\) .* lacks inputs"):
        convert_release(tmp_path / "x", tokenizer_reference=tmp_path)


def test_a_wrong_tokenizer_config_fails_the_reference_check(hub_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wrong = dict(FIXTURE_CONFIG, qformer=dict(FIXTURE_CONFIG["qformer"], num_heads=2))
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(ReleaseConversionError, match="reference codes"):
        convert_release(
            tmp_path / "out",
            cache_dir=hub_cache,
            tokenizer_config=tmp_path / "wrong.json",
            tokenizer_reference=FIXTURE,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.json"]  # nothing written, nothing left over


def test_an_llm_conversion_that_changes_the_weights_is_caught(hub_cache, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    import seed_hf.convert_llama

    real = seed_hf.convert_llama.convert_seed_llama

    def corrupting(input_dir, output_dir, **kwargs):
        config = real(input_dir, output_dir, **kwargs)
        for shard in Path(output_dir).glob("*.safetensors"):
            weights = load_file(str(shard))
            if "lm_head.weight" in weights:
                weights["lm_head.weight"] = weights["lm_head.weight"] + 0.01
                save_file(weights, str(shard), metadata={"format": "pt"})
        return config

    monkeypatch.setattr(seed_hf.convert_llama, "convert_seed_llama", corrupting)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ReleaseConversionError, match=r"logits differ from the release LLaMA's by .* \(max-abs\)"
    ):
        convert_release(tmp_path / "out", cache_dir=hub_cache, tokenizer_config=FIXTURE / "config.json")
    assert list(tmp_path.iterdir()) == []


def test_cli_converts_replaces_the_old_folder_and_pushes(hub_cache, tmp_path, monkeypatch):
    import seed_hf.push

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pushed = []
    monkeypatch.setattr(
        seed_hf.push, "push_folder", lambda *args, **kwargs: pushed.append((args, kwargs)) or "url"
    )
    output = tmp_path / "seed-release"
    output.mkdir()
    (output / "old.txt").write_text("old")
    argv = ["convert-release", "--cache-dir", str(hub_cache), "--output-dir", str(output), "--overwrite"]
    argv += ["--tokenizer-config", str(FIXTURE / "config.json"), "--skip-llm-parity", "--dtype", "bfloat16"]
    assert cli_main([*argv, "--push-to-hub", "someone/seed-llama-8b-hf", "--private"]) == 0
    assert not (output / "old.txt").exists() and (output / "config.json").exists()
    assert pushed == [((output, "someone/seed-llama-8b-hf"), {"private": True, "token": None})]
    assert "someone/seed-llama-8b-hf" in (output / "README.md").read_text()  # the cards load from the repo
    assert AutoModel.from_pretrained(output / "visual_tokenizer").dtype == torch.bfloat16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-release"]


def _photo():
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
