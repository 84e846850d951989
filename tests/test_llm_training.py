"""SEED-LLaMA training: sequence building, packing, the Trainer stages (LoRA -> merge -> full, SFT), resume and
the same run in one and two processes, all on a tiny random model."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from seed_llama_fixtures import (
    build_tiny_processor,
    build_tiny_seed_llama,
    build_tiny_visual_tokenizer,
)
from transformers import TrainingArguments

from seed_hf.modeling.generation_seed_llama import SeedImageTokenLayout
from seed_hf.modeling.processing_seed_llama import CHAT_TEMPLATES
from seed_hf.training.llm_data import (
    SeedLlamaPaddingCollator,
    SeedLlamaSequenceBuilder,
    build_data_collator,
)
from seed_hf.training.llm_training import (
    DEFAULT_TRAINING_ARGUMENTS,
    available_recipes,
    load_recipe,
    run_recipe,
)

WORDS = "a photo of the cat dog red sofa on beach mountain at sunset with storm".split()


def image_text(codes) -> str:
    # independent reference: the image written out as text tokens, as the processor writes it
    return "<img>" + "".join(f"<img_{code:05d}>" for code in codes) + "</img>"


def make_records(seed: int, count: int):
    rng = np.random.default_rng(seed)

    def caption():
        return " ".join(rng.choice(WORDS, size=int(rng.integers(2, 9))))

    def codes():
        return rng.integers(0, 64, size=32).tolist()

    pairs = [{"text": caption(), "image_codes": codes()} for _ in range(count)]
    documents = [
        {"texts": [caption(), None, caption(), None], "image_codes": [None, codes(), None, codes()]}
        for _ in range(count // 2)
    ]
    chats = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": caption()}]},
                {"role": "user", "content": [{"type": "text", "text": "Draw " + caption()}]},
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "Here it is."}, {"type": "image"}],
                },
            ],
            "image_codes": [codes(), codes()],
        }
        for _ in range(count)
    ]
    return pairs, documents, chats


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


# ------------------------------------------------------------------------------------------------------------------
# sequence building


def test_caption_pair_matches_the_image_written_as_text_in_both_orders(tokenizer, layout):
    builder = SeedLlamaSequenceBuilder(tokenizer, layout)
    codes = list(range(0, 64, 2))
    for image_first in (False, True):
        built = builder.build_caption_pair("a red sofa", codes, image_first=image_first)
        text = image_text(codes) + "a red sofa" if image_first else "a red sofa" + image_text(codes)
        expected = [
            tokenizer.bos_token_id,
            *tokenizer(text, add_special_tokens=False)["input_ids"],
            tokenizer.eos_token_id,
        ]
        assert built["input_ids"] == expected
        assert built["labels"] == expected


def test_pair_order_is_random_per_sample_and_reproducible(tokenizer, layout):
    record = {"text": "a cat", "image_codes": [3] * 32}

    def orders(seed):
        builder = SeedLlamaSequenceBuilder(tokenizer, layout, seed=seed)
        return [builder(record, index)["input_ids"][1] == layout.boi_token_id for index in range(64)]

    first = orders(0)
    assert 16 < sum(first) < 48  # both orders, about half each
    assert orders(0) == first  # same seed, same draw (every process, every resume)
    assert orders(1) != first


def test_interleaved_document_keeps_reading_order(tokenizer, layout):
    builder = SeedLlamaSequenceBuilder(tokenizer, layout)
    codes_a, codes_b = [1] * 32, list(range(32))
    built = builder(
        {"texts": ["Look: ", None, " then ", None], "image_codes": [None, codes_a, None, codes_b]}, 0
    )
    text = "Look: " + image_text(codes_a) + " then " + image_text(codes_b)
    expected = [
        tokenizer.bos_token_id,
        *tokenizer(text, add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    ]
    assert built["input_ids"] == expected


@pytest.mark.parametrize("template", ["vicuna", "llama2"])
def test_conversation_trains_on_assistant_turns_only(tokenizer, layout, template):
    builder = SeedLlamaSequenceBuilder(tokenizer, layout, chat_template=CHAT_TEMPLATES[template])
    _, _, chats = make_records(0, 1)
    record = chats[0]
    built = builder(record, 0)
    # reference: the processor renders the same conversation with the codes written as image tokens
    messages = [
        dict(message, content=[dict(part) for part in message["content"]]) for message in record["messages"]
    ]
    image_parts = [part for message in messages for part in message["content"] if part["type"] == "image"]
    for part, codes in zip(image_parts, record["image_codes"], strict=True):
        part["codes"] = codes
    processor = build_tiny_processor(tokenizer)
    rendered = processor.apply_chat_template(messages, chat_template=template, tokenize=False)
    assert built["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]

    answers = (
        record["messages"][1]["content"][0]["text"] + "Here it is." + image_text(record["image_codes"][1])
    )
    expected_trained = tokenizer(answers, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [
        token for token, label in zip(built["input_ids"], built["labels"], strict=True) if label != -100
    ] == expected_trained
    trained = [label != -100 for label in built["labels"]]
    assert all(
        label in (-100, token) for token, label in zip(built["input_ids"], built["labels"], strict=True)
    )
    assert not trained[0] and trained[-1]


def test_truncation_never_cuts_an_image(tokenizer, layout):
    record = {"texts": ["ab", None, "cd"], "image_codes": [None, [5] * 32, None]}
    full = SeedLlamaSequenceBuilder(tokenizer, layout)(record, 0)["input_ids"]
    boi = full.index(layout.boi_token_id)
    for max_length in (boi + 1, boi + 20, boi + 33):  # inside the image: drop it
        assert (
            SeedLlamaSequenceBuilder(tokenizer, layout, max_length=max_length)(record, 0)["input_ids"]
            == full[:boi]
        )
    # the whole image fits: a plain cut after it
    assert (
        SeedLlamaSequenceBuilder(tokenizer, layout, max_length=boi + 35)(record, 0)["input_ids"]
        == full[: boi + 35]
    )


def test_bad_records_raise_value_errors_naming_the_problem(tokenizer, layout):
    builder = SeedLlamaSequenceBuilder(tokenizer, layout)
    with pytest.raises(ValueError, match=r"must have shape \[num_images, 32\]"):
        builder({"text": "a cat", "image_codes": [1] * 31}, 0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 64\), got values in \[0, 64\]"):
        builder({"text": "a cat", "image_codes": [0] * 31 + [64]}, 0)
    with pytest.raises(ValueError, match="found 2 `<img>` tokens for 1 images"):
        builder({"text": "a <img></img> cat", "image_codes": [1] * 32}, 0)
    with pytest.raises(ValueError, match=r"must have `messages` \(chat\), `texts`"):
        builder({"caption": "a cat"}, 0)
    with pytest.raises(ValueError, match="position 1 must hold exactly one of an image or a text"):
        builder({"texts": ["a", "b"], "image_codes": [None, [1] * 32]}, 0)
    with pytest.raises(ValueError, match="image_first_probability"):
        SeedLlamaSequenceBuilder(tokenizer, layout, image_first_probability=1.5)


# ------------------------------------------------------------------------------------------------------------------
# packing


def per_sample_losses(model, batch) -> torch.Tensor:
    """Mean next-token loss of every sample, sorted: rows of a padded batch, or position-id segments of packed rows
    (packing reorders samples)."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    trained = labels != -100
    token_losses = (
        torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        * trained
    )
    if "position_ids" not in batch:
        return (token_losses.sum(1) / trained.sum(1)).sort().values
    # every position 0 starts a segment (a sample, or a row's padding, which has no trained label)
    segment = (
        ((batch["position_ids"] == 0).flatten().cumsum(0) - 1).view_as(batch["position_ids"])[:, 1:].flatten()
    )
    num_segments = int(segment.max()) + 1
    sums = torch.zeros(num_segments).index_add(0, segment, token_losses.flatten())
    counts = torch.zeros(num_segments).index_add(0, segment, trained.flatten().float())
    return (sums[counts > 0] / counts[counts > 0]).sort().values


@pytest.mark.parametrize(
    ("attn_implementation", "row_length"), [("sdpa", None), ("eager", None), ("sdpa", 160), ("eager", 160)]
)
def test_packed_batch_gives_the_per_sample_losses_of_the_unpacked_samples(
    tokenizer, layout, attn_implementation, row_length
):
    # a large initialisation makes attention matter, so that crossing samples would show
    model = build_tiny_seed_llama(tokenizer, initializer_range=0.5, max_position_embeddings=1024)
    model.set_attn_implementation(attn_implementation)
    builder = SeedLlamaSequenceBuilder(tokenizer, layout)
    pairs, documents, _ = make_records(1, 4)
    features = [builder(record, index) for index, record in enumerate(pairs[:3] + documents[:2])]
    lengths = sorted(len(feature["input_ids"]) for feature in features)
    padded = SeedLlamaPaddingCollator(tokenizer.pad_token_id)(features)
    packed = build_data_collator(tokenizer.pad_token_id, packing=True, row_length=row_length)(features)
    assert "attention_mask" not in packed
    if row_length is None:
        assert packed["input_ids"].shape == (1, sum(lengths))
    else:
        # several rows, some padded, none longer than row_length
        assert 1 < packed["input_ids"].shape[0] < len(features) and packed["input_ids"].shape[1] <= row_length
        assert (packed["labels"] != -100).sum() == (padded["labels"][:, 1:] != -100).sum()

    with torch.no_grad():
        unpacked_losses = per_sample_losses(model, padded)
        packed_losses = per_sample_losses(model, packed)
        # control: the same rows attended as plain causal sequences give other losses
        crossed = dict(packed, attention_mask=torch.ones_like(packed["input_ids"]))
        crossed_losses = per_sample_losses(model, crossed)
    torch.testing.assert_close(packed_losses, unpacked_losses, atol=1e-5, rtol=0)
    assert (crossed_losses - unpacked_losses).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------------------------------
# recipes and Trainer stages


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("llm")
    # the model must accept packed rows longer than one sample's context
    model = build_tiny_seed_llama(
        tokenizer, max_position_embeddings=1024, visual_tokenizer_name_or_path="visual_tokenizer"
    )
    model.save_pretrained(folder / "base")
    build_tiny_visual_tokenizer().save_pretrained(folder / "base" / "visual_tokenizer")
    build_tiny_processor(tokenizer).save_pretrained(folder / "base")
    pairs, documents, chats = make_records(2, 16)
    return {
        "folder": folder,
        "base": str(folder / "base"),
        "pairs": write_jsonl(folder / "pairs.jsonl", pairs),
        "documents": write_jsonl(folder / "documents.jsonl", documents),
        "chats": write_jsonl(folder / "chats.jsonl", chats),
    }


def fixed_batch_loss(model, builder, records) -> float:
    batch = SeedLlamaPaddingCollator(0)([builder(record, index) for index, record in enumerate(records)])
    model.eval()
    with torch.no_grad():
        return model(**batch, use_cache=False).loss.item()


def logged_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_every_packaged_recipe_loads_and_full_size_ones_use_the_paper_optimiser():
    names = available_recipes()
    assert {
        "llm_pretrain_lora_8b",
        "llm_merge_8b",
        "llm_pretrain_full_8b",
        "llm_sft_8b",
        "llm_pretrain_lora_tiny",
    } <= set(names)
    argument_names = {field.name for field in dataclasses.fields(TrainingArguments)}
    for name in names:
        recipe = load_recipe(name)
        assert set(recipe.training) <= argument_names, name  # no misspelt key waits for a full-size run
        if recipe.stage == "lora":
            recipe.lora_config()
    for name in ("llm_pretrain_lora_8b", "llm_pretrain_full_8b"):
        training = load_recipe(name).training
        for key in (
            "learning_rate",
            "lr_scheduler_type",
            "lr_scheduler_kwargs",
            "weight_decay",
            "warmup_steps",
            "adam_beta1",
            "adam_beta2",
            "adam_epsilon",
            "max_grad_norm",
        ):
            assert training[key] == DEFAULT_TRAINING_ARGUMENTS[key], (name, key)
    lora = load_recipe("llm_pretrain_lora_8b").lora_config()
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (16, 32, 0.05)
    with pytest.raises(
        ValueError, match=r"unknown key 'learning_rate' at the top level; the valid keys there"
    ):
        load_recipe("llm_pretrain_lora_tiny", learning_rate=1.0)
    # `--set` overrides: any depth, the value read as YAML 1.2 (`1e-4` a number, `no` a string)
    recipe = load_recipe(
        "llm_pretrain_full_8b",
        [
            "training.learning_rate=1e-4",
            "training.save_strategy=no",
            "training.deepspeed.zero_optimization.stage=3",
        ],
    )
    assert recipe.training["learning_rate"] == 1e-4 and recipe.training["save_strategy"] == "no"
    assert recipe.training["deepspeed"]["zero_optimization"] == {
        "stage": 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
    }
    with pytest.raises(
        ValueError, match=r"unknown key 'rr' under 'lora' \(did you mean 'r'\?\): not a LoraConfig"
    ):
        load_recipe("llm_pretrain_lora_tiny", ["lora.rr=2"])
    with pytest.raises(ValueError, match=r"'training.bf16' must be bool, got 'sometimes'"):
        load_recipe("llm_pretrain_lora_tiny", ["training.bf16=sometimes"])
    with pytest.raises(
        ValueError, match="the 'lora' stage needs model_name_or_path, output_dir, train_files"
    ):
        run_recipe(load_recipe("llm_pretrain_lora_tiny"))


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (False, False)])
def test_bf16_auto_means_bf16_where_the_cpu_computes_in_it(monkeypatch, tmp_path, avx512_bf16, amx):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    recipe = load_recipe(
        "llm_pretrain_lora_tiny", ["training.bf16=auto", "training.use_cpu=true"], output_dir=str(tmp_path)
    )
    assert recipe.training_arguments().bf16 is (avx512_bf16 or amx)
    # without `use_cpu` too, on a machine without an accelerator (transformers asks for `use_cpu` with bf16 there)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    arguments = load_recipe(
        "llm_pretrain_lora_tiny", ["training.bf16=auto"], output_dir=str(tmp_path)
    ).training_arguments()
    assert (arguments.bf16, arguments.use_cpu) == (avx512_bf16 or amx, avx512_bf16 or amx)
    # an explicit value is kept whatever the hardware
    recipe = load_recipe("llm_pretrain_lora_tiny", ["training.bf16=false"], output_dir=str(tmp_path))
    assert recipe.training_arguments().bf16 is False


def test_lora_stage_then_merge_then_full_stage(workspace):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = workspace["folder"]
    tokenizer = AutoTokenizer.from_pretrained(workspace["base"])
    base = AutoModelForCausalLM.from_pretrained(workspace["base"])
    builder = SeedLlamaSequenceBuilder(tokenizer, SeedImageTokenLayout.from_config(base.config))
    fixed = [json.loads(line) for line in Path(workspace["pairs"]).read_text().splitlines()[:4]]
    loss_before = fixed_batch_loss(base, builder, fixed)

    # stage 1: LoRA on the projections, embeddings / lm_head / norms trained in full
    recipe = load_recipe(
        "llm_pretrain_lora_tiny",
        model_name_or_path=workspace["base"],
        train_files=[workspace["pairs"], workspace["documents"]],
        output_dir=str(folder / "lora"),
    )
    trainer = run_recipe(recipe)
    peft_model = trainer.model
    assert isinstance(peft_model, PeftModel)
    trainable = {name for name, parameter in peft_model.named_parameters() if parameter.requires_grad}
    assert trainable and all(("lora_" in name) or ("modules_to_save" in name) for name in trainable)
    wrapped = {
        name.split(".modules_to_save")[0].split("base_model.model.")[1]
        for name in trainable
        if "modules_to_save" in name
    }
    assert {
        "model.embed_tokens",
        "lm_head",
        "model.norm",
        "model.layers.1.input_layernorm",
        "model.layers.1.post_attention_layernorm",
    } <= wrapped
    assert {
        f"model.layers.0.{kind}.{proj}_proj"
        for kind, projs in (("self_attn", "qkvo"), ("mlp", ["gate", "up", "down"]))
        for proj in projs
    } == {
        name.split(".lora_A")[0].split("base_model.model.")[1]
        for name in trainable
        if "lora_A" in name and ".layers.0." in name
    }
    assert fixed_batch_loss(peft_model, builder, fixed) < loss_before - 0.1

    # stage 2: merge into a plain seed_llama folder that computes what the adapter model computes
    from seed_hf.cli import main as cli_main

    merged_dir = folder / "merged"
    args = [
        "train-llm",
        "--recipe",
        "llm_merge_tiny",
        "--model",
        workspace["base"],
        "--adapter",
        str(folder / "lora"),
        "--output-dir",
        str(merged_dir),
    ]
    assert cli_main(args) == 0
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert type(merged).__name__ == "SeedLlamaForCausalLM" and merged.config.use_cache
    assert not any(
        "lora" in key or "modules_to_save" in key for key in load_file(merged_dir / "model.safetensors")
    )
    batch = SeedLlamaPaddingCollator(0)([builder(record, index) for index, record in enumerate(fixed)])
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, peft_model(**batch).logits, atol=1e-5, rtol=1e-5)
    assert (merged_dir / "processor_config.json").exists() and not list(folder.glob(".merged.*"))
    # the visual tokenizer stays reachable from the new folder
    assert type(merged.visual_tokenizer).__name__ == "SeedTokenizerModel"

    # stage 3: full fine-tuning with the input embeddings frozen
    full = run_recipe(
        load_recipe(
            "llm_pretrain_full_tiny",
            model_name_or_path=str(merged_dir),
            train_files=workspace["pairs"],
            output_dir=str(folder / "full"),
        )
    ).model
    assert torch.equal(full.get_input_embeddings().weight, merged.get_input_embeddings().weight)
    reloaded_config = json.loads((folder / "full" / "config.json").read_text())
    assert reloaded_config["visual_tokenizer_name_or_path"] == str(
        (folder / "base" / "visual_tokenizer").resolve()
    )
    assert not torch.equal(full.lm_head.weight, merged.lm_head.weight)
    assert not torch.equal(
        full.model.layers[0].self_attn.q_proj.weight, merged.model.layers[0].self_attn.q_proj.weight
    )
    assert fixed_batch_loss(full, builder, fixed) < fixed_batch_loss(merged, builder, fixed) - 0.05


def test_sft_stage_loss_falls_on_assistant_turns(workspace):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workspace["base"])
    base = AutoModelForCausalLM.from_pretrained(workspace["base"])
    builder = SeedLlamaSequenceBuilder(
        tokenizer, SeedImageTokenLayout.from_config(base.config), chat_template=CHAT_TEMPLATES["vicuna"]
    )
    fixed = [json.loads(line) for line in Path(workspace["chats"]).read_text().splitlines()[:4]]
    recipe = load_recipe(
        "llm_sft_tiny",
        model_name_or_path=workspace["base"],
        train_files=workspace["chats"],
        output_dir=str(workspace["folder"] / "sft"),
    )
    trainer = run_recipe(recipe)
    assert fixed_batch_loss(trainer.model, builder, fixed) < fixed_batch_loss(base, builder, fixed) - 0.1


def test_packed_and_padded_training_steps_give_the_same_losses(workspace):
    losses = {}
    for packing in (False, True):
        recipe = load_recipe(
            "llm_pretrain_full_tiny",
            model_name_or_path=workspace["base"],
            train_files=workspace["documents"],
            output_dir=str(workspace["folder"] / f"packing-{packing}"),
            packing=packing,
            training={"max_steps": 3, "save_strategy": "no"},
        )
        losses[packing] = logged_losses(run_recipe(recipe))
    np.testing.assert_allclose(losses[True], losses[False], atol=1e-5, rtol=0)


def read_adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "adapter_model.safetensors")


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(workspace, capfd):
    from seed_hf.cli import main as cli_main

    folder = workspace["folder"]
    common = ["train-llm", "--recipe", "llm_pretrain_lora_tiny", "--model", workspace["base"]]
    common += [
        "--train-files",
        workspace["pairs"],
        "--set",
        "training.max_steps=4",
        "--set",
        "training.save_steps=2",
    ]
    # LoRA dropout stays on: the checkpoint must restore the random state too
    assert cli_main([*common, "--output-dir", str(folder / "straight")]) == 0
    # a run stopped after step 2: only its first checkpoint exists
    shutil.copytree(folder / "straight" / "checkpoint-2", folder / "resumed" / "checkpoint-2")
    capfd.readouterr()
    assert (
        cli_main([*common, "--output-dir", str(folder / "resumed"), "--resume-from-checkpoint", "last"]) == 0
    )
    # it did start from the checkpoint: only steps 3 and 4 ran and logged their loss (a fresh 4-step run would
    # end with the same weights too)
    assert capfd.readouterr().out.count("'loss'") == 2
    straight, resumed = read_adapter(folder / "straight"), read_adapter(folder / "resumed")
    halfway = read_adapter(folder / "straight" / "checkpoint-2")
    assert straight.keys() == resumed.keys()
    assert any(not torch.equal(straight[key], halfway[key]) for key in straight)  # steps 3-4 did train
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=0)


def test_two_processes_give_the_losses_of_one_process_with_the_same_global_batch(workspace):
    from seed_hf.cli import main as cli_main

    folder = workspace["folder"]
    common = ["train-llm", "--recipe", "llm_pretrain_lora_tiny", "--model", workspace["base"]]
    common += ["--train-files", workspace["pairs"], "--set", "lora.lora_dropout=0"]
    common += ["--set", "training.max_steps=3", "--set", "training.save_strategy=no"]
    # `accelerate launch --cpu` starts a single process (several need MPI); `--multi_gpu` starts real processes
    # with torchrun, which join a gloo process group on CPU
    launch = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
    ]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    # a free port: other jobs on the machine may hold torchrun's default one
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        launch += ["--main_process_port", str(probe.getsockname()[1])]
    two = ["--output-dir", str(folder / "two"), "--set", "training.per_device_train_batch_size=2"]
    two += ["--set", "training.use_cpu=true"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launch, "-m", "seed_hf.cli", *common, *two], env=env, cwd=folder, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = ["--output-dir", str(folder / "one"), "--set", "training.per_device_train_batch_size=4"]
    assert cli_main([*common, *one]) == 0

    def history(name):
        state = json.loads((folder / name / "trainer_state.json").read_text())
        return [entry for entry in state["log_history"] if "loss" in entry]

    # 16 records, 4 per step in both runs: each step is a quarter epoch (2 per device x 2 processes)
    assert [entry["epoch"] for entry in history("two")] == [0.25, 0.5, 0.75]
    assert [entry["epoch"] for entry in history("one")] == [0.25, 0.5, 0.75]
    np.testing.assert_allclose(
        [entry["loss"] for entry in history("two")],
        [entry["loss"] for entry in history("one")],
        atol=1e-4,
        rtol=0,
    )


def test_a_recipe_longer_than_the_model_context_is_refused(workspace):
    recipe = load_recipe(
        "llm_pretrain_full_tiny",
        model_name_or_path=workspace["base"],
        train_files=workspace["pairs"],
        output_dir=str(workspace["folder"] / "too-long"),
        max_length=2048,
    )
    with pytest.raises(
        ValueError,
        match=r"`max_length` \(2048\) exceeds the model's context \(max_position_embeddings=1024\)",
    ):
        run_recipe(recipe)
