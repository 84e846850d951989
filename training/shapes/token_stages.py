"""`train-shapes` stages from the SEED tokenizer to the final checkpoint: tokenizer stages 1 and 2, image tokenization,
the LLM stages (init, LoRA, merge, full, SFT, several-image SFT) and `seed_shapes`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from seed_hf.io_utils import staged_directory

from . import world
from .run import (
    EXAMPLE_ATTRIBUTES,
    EXAMPLE_IMAGE_FILE,
    IMAGE_TEXT_MODEL_FOLDER,
    SHAPES_ANSWER_TOKENS,
    SHAPES_DECODER_DEFAULTS,
    SHAPES_DECODER_SCHEDULER,
    SHAPES_SAMPLING,
    STAGE_TIMES_FILE,
    TRAINING_DEFAULTS,
    TRAINING_TIMES_FILE,
    ShapesRun,
    trainer_arguments,
)
from .sequences import MAX_CLIP_FRAMES


def _tokenizer_recipe(run: ShapesRun, stage: str) -> dict[str, Any]:
    """A `seed_hf.training.tokenizer_stages` recipe from the shapes recipe's section `stage` (sizes, training)."""
    recipe = dataclasses.asdict(getattr(run.recipe, stage))
    recipe["training"] = trainer_arguments(recipe["training"], run.checkpoint_dir(stage), run.seed)
    recipe["seed"] = run.seed
    return recipe


def run_tokenizer_stage1(run: ShapesRun, staging: Path) -> None:
    from transformers import AutoTokenizer

    data_dir = run.stage_dir("data")
    text_tokenizer = AutoTokenizer.from_pretrained(data_dir / "clip_tokenizer")
    recipe = _tokenizer_recipe(run, "tokenizer_stage1")
    config = recipe.pop("config")
    config["vision_config"] = {**config["vision_config"], "image_size": run.recipe.image_size}
    config["qformer_config"] = {**config["qformer_config"], "vocab_size": len(text_tokenizer)}
    config["generation_embedding_dim"] = run.recipe.teacher.projection_dim
    recipe["stage"] = 1
    recipe["model"] = {
        "config": config,
        "settings": recipe.pop("settings"),
        "vision_position_embedding_std": recipe.pop("vision_position_embedding_std"),
    }
    recipe["text_tokenizer"] = str(data_dir / "clip_tokenizer")
    if recipe["model"]["settings"].get("teacher_distillation_weight"):
        recipe["teacher"] = {"pretrained": str(run.stage_dir("teacher"))}
    recipe["data"] = {
        "source": str(data_dir / "captions"),
        "max_text_length": recipe.pop("max_text_length"),
        **_attribute_columns(recipe["model"]["settings"]),
    }
    trainer = _train_tokenizer_stage(run, recipe, staging)
    # the whole stage-1 model (with the Q-Former's text side) measures caption -> image retrieval; the causal
    # Q-Former it holds is frozen in stage 2, so its image side stays the shipped tokenizer's
    image_text_model = staging / IMAGE_TEXT_MODEL_FOLDER
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(image_text_model)
    text_tokenizer.save_pretrained(image_text_model)


def run_tokenizer_stage2(run: ShapesRun, staging: Path) -> None:
    recipe = _tokenizer_recipe(run, "tokenizer_stage2")
    recipe["stage"] = 2
    recipe["model"] = {
        "tokenizer": str(run.stage_dir("tokenizer_stage1")),
        "settings": recipe.pop("settings"),
    }
    recipe["teacher"] = {"pretrained": str(run.stage_dir("teacher"))}
    recipe["data"] = {
        "source": str(run.stage_dir("data") / "images"),
        **_attribute_columns(recipe["model"]["settings"]),
    }
    _train_tokenizer_stage(run, recipe, staging)


def _attribute_columns(settings: dict[str, Any]) -> dict[str, list[str]]:
    """The data's attribute columns, in the world's order (the query groups'), for a stage with the attribute
    term."""
    return {"attribute_columns": list(world.ATTRIBUTE_NAMES)} if settings.get("attribute_loss_weight") else {}


def _train_tokenizer_stage(run: ShapesRun, recipe: dict[str, Any], staging: Path):
    """Train a tokenizer stage and export the tokenizer into `staging`; returns the trainer."""
    from ..tokenizer_stages import build_trainer

    # as `train_tokenizer` does, but exporting into the stage's staging folder
    trainer, image_processor = build_trainer(recipe)
    run.train(trainer)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    unwrapped.export_tokenizer().save_pretrained(staging)
    image_processor.save_pretrained(staging)
    (staging / "training_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
    return trainer


def run_tokenized(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller: the partial folder is kept between runs so that tokenization resumes."""
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel

    from ..tokenize_images import image_processor_for, tokenize_images

    tokenizer_dir = run.stage_dir("tokenizer_stage2")
    model = SeedTokenizerModel.from_pretrained(tokenizer_dir).eval()
    image_processor = image_processor_for(str(tokenizer_dir), model.config)
    partial = run.checkpoint_dir("tokenized")
    batch_size = run.recipe.tokenized.batch_size
    data_dir = run.stage_dir("data")
    tokenize_images(
        str(data_dir / "captions"), model, image_processor, partial / "captions", batch_size=batch_size
    )
    for chat in ("chat", "sequence_chat"):
        if not (data_dir / chat).is_dir():  # a recipe without several-image records
            continue
        tokenize_images(
            str(data_dir / chat),
            model,
            image_processor,
            partial / chat,
            image_column="images",
            batch_size=batch_size,
        )
    os.replace(partial, target)


def run_llm_init(run: ShapesRun, staging: Path) -> None:
    from transformers import AutoTokenizer, set_seed

    from seed_hf.modeling.configuration_seed_llama import SeedLlamaConfig
    from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout
    from seed_hf.modeling.image_processing_seed import SeedImageProcessor
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
    from seed_hf.modeling.processing_seed_llama import SeedLlamaProcessor

    tokenizer = AutoTokenizer.from_pretrained(run.stage_dir("data") / "llm_tokenizer")
    tokens_per_image = run.recipe.tokenizer_stage1.config.get("num_query_tokens", 32)
    layout = SeedImageTokenLayout.from_tokenizer(tokenizer, tokens_per_image)
    config = SeedLlamaConfig(
        # the `<image>` placeholder lies past the vocabulary, as in converted releases: it is never embedded
        vocab_size=layout.eoi_token_id + 1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_image_codes=layout.num_image_codes,
        tokens_per_image=tokens_per_image,
        image_code_start_id=layout.image_code_start_id,
        boi_token_id=layout.boi_token_id,
        eoi_token_id=layout.eoi_token_id,
        image_placeholder_id=layout.image_placeholder_id,
        **run.recipe.llm.config,
    )
    set_seed(run.seed)
    SeedLlamaForCausalLM(config).save_pretrained(staging)
    image_processor = SeedImageProcessor.from_pretrained(run.stage_dir("tokenizer_stage2"))
    # the processor's too-long-video check needs the real context; a video's frames default to a clip's
    tokenizer.model_max_length = config.max_position_embeddings
    SeedLlamaProcessor(
        image_processor, tokenizer, tokens_per_image=tokens_per_image, num_frames=MAX_CLIP_FRAMES
    ).save_pretrained(staging)


def _llm_recipe(run: ShapesRun, stage: str, model_dir: Path, train_files: list[Path]):
    recipe = getattr(run.recipe.llm, stage)
    if recipe.data_seed not in (0, run.seed):  # 0: LlmRecipe's default, i.e. not set in the shapes recipe
        raise ValueError(f"`llm.{stage}.data_seed` is the run's `seed` in train-shapes; set `seed` instead")
    return dataclasses.replace(
        recipe,
        model_name_or_path=str(model_dir),
        output_dir=str(run.checkpoint_dir(f"llm_{stage}")),
        train_files=[str(path) for path in train_files],
        training={**TRAINING_DEFAULTS, "seed": run.seed, **recipe.training},
        data_seed=run.seed,
    )


def _train_llm(run: ShapesRun, recipe, staging: Path) -> None:
    from ..llm_training import build_trainer

    trainer = build_trainer(recipe)
    run.train(trainer)
    trainer.model.config.use_cache = True  # the saved model is for inference again
    trainer.save_model(str(staging))


def run_llm_lora(run: ShapesRun, staging: Path) -> None:
    recipe = _llm_recipe(run, "lora", run.stage_dir("llm_init"), [run.stage_dir("tokenized") / "captions"])
    _train_llm(run, recipe, staging)


def run_llm_merged(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller: `merge_lora` writes its folder atomically itself."""
    from ..llm_training import merge_lora

    merge_lora(str(run.stage_dir("llm_init")), str(run.stage_dir("llm_lora")), target)


def run_llm_full(run: ShapesRun, staging: Path) -> None:
    recipe = _llm_recipe(run, "full", run.stage_dir("llm_merged"), [run.stage_dir("tokenized") / "captions"])
    _train_llm(run, recipe, staging)


def _run_instruction_stage(run: ShapesRun, stage: str, model_dir: Path, records: str, target: Path) -> None:
    """Instruction tuning `llm.<stage>` from `model_dir` on `tokenized/<records>`: a full stage is saved through a
    staging folder, a LoRA one merged into `model_dir`'s weights atomically."""
    from ..llm_training import merge_lora

    recipe = _llm_recipe(run, stage, model_dir, [run.stage_dir("tokenized") / records])
    if recipe.stage == "full":
        with staged_directory(target) as staging:
            _train_llm(run, recipe, staging)
        return
    adapter_dir = run.checkpoint_dir(f"llm_{stage}") / "adapter"
    if not adapter_dir.exists():
        with staged_directory(adapter_dir) as staging:
            _train_llm(run, recipe, staging)
    merge_lora(str(model_dir), str(adapter_dir), target)


def run_llm_sft(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller (see `_run_instruction_stage`)."""
    _run_instruction_stage(run, "sft", run.stage_dir("llm_full"), "chat", target)


def run_llm_sequences(run: ShapesRun, target: Path) -> None:
    """Not staged by the caller (see `_run_instruction_stage`). A recipe with no several-image records skips the
    training: the folder is the SFT model's, hard-linked."""
    data = run.recipe.data
    if data.clip_qa_samples + data.composition_samples + data.in_context_samples == 0:
        with staged_directory(target) as staging:
            shutil.copytree(run.stage_dir("llm_sft"), staging, copy_function=os.link, dirs_exist_ok=True)
        return
    _run_instruction_stage(run, "sequences", run.stage_dir("llm_sft"), "sequence_chat", target)


def set_shapes_inference_defaults(model, detokenizer) -> None:
    """Give the SEED-Shapes LLM and de-tokenizer their recommended inference settings, saved with them."""
    import diffusers
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        **SHAPES_SAMPLING,
        max_new_tokens=model.config.tokens_per_image + SHAPES_ANSWER_TOKENS,
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    detokenizer.register_to_config(**SHAPES_DECODER_DEFAULTS)
    detokenizer.scheduler = getattr(diffusers, SHAPES_DECODER_SCHEDULER).from_config(
        detokenizer.scheduler.config
    )


def run_seed_shapes(run: ShapesRun, staging: Path) -> None:
    """The shipped layout (`save_seed_checkpoint`) with the SEED-Shapes inference defaults and an example image. The
    stage-1 image-text model that the evaluation's retrieval figures need stays in `tokenizer_stage1/` (no Auto
    class loads it, so it is not part of the checkpoint)."""
    from transformers import AutoProcessor

    from seed_hf.checkpoint import save_seed_checkpoint
    from seed_hf.modeling.modeling_seed_llama import SeedLlamaForCausalLM
    from seed_hf.modeling.modeling_seed_tokenizer import SeedTokenizerModel
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    llm_dir = run.stage_dir("llm_sequences")
    model = SeedLlamaForCausalLM.from_pretrained(llm_dir)
    detokenizer = SeedUnCLIPPipeline.from_pretrained(run.stage_dir("decoder"))
    set_shapes_inference_defaults(model, detokenizer)
    save_seed_checkpoint(
        staging,
        model=model,
        processor=AutoProcessor.from_pretrained(llm_dir),
        visual_tokenizer=SeedTokenizerModel.from_pretrained(run.stage_dir("tokenizer_stage2")),
        detokenizer=detokenizer,
    )
    # the main job's example image (a seen combination)
    world.render(EXAMPLE_ATTRIBUTES).save(staging / EXAMPLE_IMAGE_FILE)
    times = run.output_dir / STAGE_TIMES_FILE
    if times.is_file():  # for the model card
        shutil.copyfile(times, staging / TRAINING_TIMES_FILE)
