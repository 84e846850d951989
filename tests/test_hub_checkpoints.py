"""The shipped checkpoint as users meet it on the Hub: by repo id from a warm cache (offline), with and without
seed-hf installed (remote code), and the generated code files equal to the package's sources."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from hub_cache import environment_without_seed_hf, lay_into_cache
from PIL import Image

import seed_hf
from seed_hf.checkpoint import DETOKENIZER_FOLDER, VISUAL_TOKENIZER_FOLDER
from seed_hf.modeling.checkpoint_components import code_files

REPOSITORY = Path(__file__).resolve().parents[1]
SHIPPED = REPOSITORY / "models" / "seed-shapes"
REPO_ID = "org/seed-shapes"
PROMPT = "a large red circle in the center on a white background"
QUESTION = "What color is the square?"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The shipped folder as `org/seed-shapes` at `main`, and a `v1` branch whose de-tokenizer differs."""
    cache = tmp_path_factory.mktemp("hub-cache")
    shas = {"main": lay_into_cache(cache, REPO_ID, SHIPPED)}
    files = {str(path.relative_to(SHIPPED)): path for path in SHIPPED.rglob("*") if path.is_file()}
    v1_index = tmp_path_factory.mktemp("v1") / "model_index.json"
    index = json.loads((SHIPPED / DETOKENIZER_FOLDER / "model_index.json").read_text())
    index["default_num_inference_steps"] = 3
    v1_index.write_text(json.dumps(index))
    files[f"{DETOKENIZER_FOLDER}/model_index.json"] = v1_index
    shas["v1"] = lay_into_cache(cache, REPO_ID, files, revision="v1")
    return cache, shas


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    import huggingface_hub.constants

    cache, shas = hub_cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache, shas


def _example() -> Image.Image:
    return Image.open(SHIPPED / "example.png").convert("RGB")


def _image_prompt(processor) -> dict:
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": _example()}, {"type": "text", "text": QUESTION}],
        }
    ]
    return processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")


def test_auto_classes_by_repo_id_with_an_image_prompt(offline_cache):
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(REPO_ID, dtype=torch.bfloat16)
    processor = AutoProcessor.from_pretrained(REPO_ID)
    inputs = _image_prompt(processor)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    # the visual tokenizer came from the same repo, in the LLM's dtype
    assert model.visual_tokenizer.dtype == torch.bfloat16
    assert Path(model.visual_tokenizer.config.name_or_path).parts[-3:-1] == (
        "snapshots",
        offline_cache[1]["main"],
    )
    for subfolder in (None, VISUAL_TOKENIZER_FOLDER):
        image_processor = AutoImageProcessor.from_pretrained(REPO_ID, subfolder=subfolder)
        assert type(image_processor).__name__ == "SeedImageProcessor"
        assert image_processor.size == processor.image_processor.size


def test_pipelines_by_repo_id_draw_and_read(offline_cache):
    from transformers import pipeline

    from seed_hf.training.shapes.reader import read_attributes

    drawer = pipeline("seed-text-to-image", model=REPO_ID)
    drawn = drawer(PROMPT, seed=0)
    reading = read_attributes(drawn["images"][0])
    assert (reading["background"], reading["shape"], reading["color"]) == ("white", "circle", "red")
    reader = pipeline("seed-image-to-text", model=REPO_ID)
    answer = reader(_example(), question=QUESTION, seed=0)[0]["generated_text"]
    assert "green" in answer.lower()
    # by revision: the `v1` branch's de-tokenizer (its own default steps) comes with the pipeline loaded at `v1`
    assert drawer.detokenizer.config.default_num_inference_steps == 8
    at_v1 = pipeline("seed-text-to-image", model=REPO_ID, revision="v1")
    assert at_v1.detokenizer.config.default_num_inference_steps == 3
    assert at_v1(PROMPT, seed=0)["images"][0].size == (64, 64)


def test_detokenizer_by_repo_id_subfolder_and_revision(offline_cache):
    from seed_hf import SeedUnCLIPPipeline

    main = SeedUnCLIPPipeline.from_pretrained(REPO_ID, subfolder=DETOKENIZER_FOLDER)
    v1 = SeedUnCLIPPipeline.from_pretrained(REPO_ID, subfolder=DETOKENIZER_FOLDER, revision="v1")
    assert main.seed_tokenizer is not None and v1.seed_tokenizer is not None  # the sibling visual tokenizer
    assert (main.config.default_num_inference_steps, v1.config.default_num_inference_steps) == (8, 3)
    codes = torch.zeros(1, 32, dtype=torch.long)
    image = v1(image_codes=codes, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    with pytest.raises(OSError, match="no component folder 'nothing'"):
        SeedUnCLIPPipeline.from_pretrained(REPO_ID, subfolder="nothing")


def test_plain_calls_use_the_checkpoint_defaults():
    from transformers import AutoModel

    model = AutoModel.from_pretrained(SHIPPED)
    config = model.generation_config
    assert (config.do_sample, config.top_p, config.max_new_tokens) == (True, 0.5, 80)
    assert model._max_new_tokens(10, None, {}) == 80
    assert model._max_new_tokens(370, None, {}) == model.config.max_position_embeddings - 370
    assert model._max_new_tokens(10, None, {"max_new_tokens": 5}) == 5
    index = json.loads((SHIPPED / DETOKENIZER_FOLDER / "model_index.json").read_text())
    assert (index["default_num_inference_steps"], index["default_guidance_scale"]) == (8, 2.0)
    assert index["scheduler"] == ["diffusers", "UniPCMultistepScheduler"]


def test_generate_never_truncates_an_image():
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(SHIPPED)
    processor = AutoProcessor.from_pretrained(SHIPPED)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=True, return_dict=True, return_tensors="pt"
    )
    prompt_length = inputs["input_ids"].shape[1]
    # a budget that leaves no room for a whole image: force_image is refused up front ...
    with pytest.raises(ValueError, match="room for a whole image"):
        model.generate(**inputs, force_image=True, max_new_tokens=20)
    # ... and without forcing, no image is opened that could not close
    torch.manual_seed(0)
    new = model.generate(**inputs, max_new_tokens=20)[0, prompt_length:]
    assert not (new == model.config.boi_token_id).any()
    # with the checkpoint's own budget, a forced image is complete
    new = model.generate(**inputs, force_image=True)[0, prompt_length:]
    assert processor.parse_generation(new)[0].complete


def test_code_files_equal_the_package_sources():
    """The remote code in the shipped checkpoint is a generated artifact: each file equals the package's."""
    sources = {
        path.name: path for folder in ("modeling", "pipelines") for path in (REPOSITORY / folder).glob("*.py")
    }
    copies = sorted(SHIPPED.rglob("*.py"))
    assert {path.name for path in copies} >= {
        "modeling_seed_llama.py",
        "text_to_image.py",
        "pipeline_seed_unclip.py",
    }
    for folder in {copy.parent for copy in copies}:  # and each folder holds every file its code imports
        needed = {path.name for copy in folder.glob("*.py") for path in code_files(sources[copy.name])}
        assert needed <= {path.name for path in folder.glob("*.py")}, folder
    for copy in copies:
        assert copy.read_bytes() == sources[copy.name].read_bytes(), (
            f"{copy} differs from the package source: run seed_hf.checkpoint.refresh_remote_code('models/seed-shapes')"
        )


# ---------------------------------------------------------------------------------------------------- remote code
_REMOTE_SCRIPT = textwrap.dedent(
    """
    import hashlib, io, json, sys
    import huggingface_hub.constants
    huggingface_hub.constants.HF_HUB_CACHE = sys.argv[1]
    import torch
    from PIL import Image
    from diffusers import DiffusionPipeline
    from transformers import AutoModel, AutoProcessor, pipeline
    from huggingface_hub import snapshot_download

    try:
        import seed_hf
        raise SystemExit("seed_hf must not be importable here")
    except ImportError:
        pass
    repo, example, prompt, question = sys.argv[2:6]
    model = AutoModel.from_pretrained(repo, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.open(example).convert("RGB")},
                                             {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    drawn = pipeline("seed-text-to-image", model=repo, trust_remote_code=True)(prompt, seed=0)
    answer = pipeline("seed-image-to-text", model=repo, trust_remote_code=True)(
        Image.open(example).convert("RGB"), question=question, seed=0)[0]["generated_text"]
    folder = snapshot_download(repo)
    detokenizer = DiffusionPipeline.from_pretrained(
        folder + "/detokenizer", trust_remote_code=True,
        seed_tokenizer=AutoModel.from_pretrained(folder + "/visual_tokenizer", trust_remote_code=True))
    image = detokenizer(image_codes=drawn["image_codes"][0][None], generator=torch.Generator().manual_seed(1)).images[0]
    def png(image):
        buffer = io.BytesIO(); image.save(buffer, format="PNG"); return hashlib.sha256(buffer.getvalue()).hexdigest()
    print(json.dumps({
        "classes": [type(model).__module__, type(processor).__module__, type(detokenizer).__module__],
        "logits": logits.tolist(), "codes": drawn["image_codes"][0].tolist(), "drawn": png(drawn["images"][0]),
        "answer": answer, "detokenized": png(image)}))
    """
)


def _png_digest(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_remote_code_without_the_package_matches_the_package(offline_cache, tmp_path):
    from diffusers import DiffusionPipeline
    from transformers import AutoModel, AutoProcessor, pipeline

    cache, _ = offline_cache
    python = environment_without_seed_hf(tmp_path / "venv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [python, "-c", _REMOTE_SCRIPT, str(cache), REPO_ID, str(SHIPPED / "example.png"), PROMPT, QUESTION],
        cwd=tmp_path,  # not the repository: its seed_hf/ folder must not be importable
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(
        module.startswith(("transformers_modules", "diffusers_modules")) for module in remote["classes"]
    )

    model = AutoModel.from_pretrained(REPO_ID)
    processor = AutoProcessor.from_pretrained(REPO_ID)
    with torch.no_grad():
        logits = model(**_image_prompt(processor)).logits[0, -1]
    assert (logits - torch.tensor(remote["logits"])).abs().max() <= 1e-5
    drawn = pipeline("seed-text-to-image", model=REPO_ID)(PROMPT, seed=0)
    assert drawn["image_codes"][0].tolist() == remote["codes"]
    assert _png_digest(drawn["images"][0]) == remote["drawn"]
    answer = pipeline("seed-image-to-text", model=REPO_ID)(_example(), question=QUESTION, seed=0)
    assert answer[0]["generated_text"] == remote["answer"]
    detokenizer = seed_hf.SeedUnCLIPPipeline.from_pretrained(REPO_ID, subfolder=DETOKENIZER_FOLDER)
    assert not isinstance(detokenizer, type(None)) and isinstance(detokenizer, DiffusionPipeline)
    image = detokenizer(
        image_codes=drawn["image_codes"][0][None], generator=torch.Generator().manual_seed(1)
    ).images[0]
    assert _png_digest(image) == remote["detokenized"]


def test_without_the_package_or_the_flag_the_error_names_the_flag(offline_cache, tmp_path):
    cache, _ = offline_cache
    python = environment_without_seed_hf(tmp_path / "venv")
    script = (
        "import sys, huggingface_hub.constants as c; c.HF_HUB_CACHE = sys.argv[1]\n"
        "from transformers import AutoModel\n"
        "AutoModel.from_pretrained(sys.argv[2], trust_remote_code=False)\n"
    )
    result = subprocess.run(
        [python, "-c", script, str(cache), REPO_ID],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "trust_remote_code" in result.stderr


def test_main_job_finds_its_model_by_argument_environment_or_source_tree(
    offline_cache, monkeypatch, tmp_path
):
    from seed_hf import main_job

    monkeypatch.delenv(main_job.MODEL_ENVIRONMENT_VARIABLE, raising=False)
    assert main_job.resolve_model() == main_job.SOURCE_TREE_MODEL
    assert main_job.resolve_model(REPO_ID).parts[-2:] == ("snapshots", offline_cache[1]["main"])
    monkeypatch.setenv(main_job.MODEL_ENVIRONMENT_VARIABLE, str(SHIPPED))
    assert main_job.resolve_model() == SHIPPED
    # a non-editable install has no source tree: the error says what to pass
    monkeypatch.delenv(main_job.MODEL_ENVIRONMENT_VARIABLE)
    monkeypatch.setattr(main_job, "SOURCE_TREE_MODEL", tmp_path / "site-packages" / "models" / "seed-shapes")
    with pytest.raises(ValueError, match="pass --model .* or set SEED_HF_MODEL"):
        main_job.resolve_model()
