"""Training recipes (`seed_hf.training.recipes`): every shipped recipe loads into its dataclasses unchanged, one
override syntax for every stage, misspelt or mistyped keys are refused by name, and `--help` lists every field."""

import dataclasses
import re
import typing

import pytest

from seed_hf.training import recipes
from seed_hf.training.llm_training import LlmRecipe
from seed_hf.training.llm_training import main as llm_main
from seed_hf.training.recipes import RECIPES_DIR, apply_overrides, parse_recipe, read_yaml
from seed_hf.training.shapes.recipe import ShapesRecipe, load_shapes_recipe
from seed_hf.training.tokenizer_stages import TokenizerRecipe
from seed_hf.training.tokenizer_stages import load_recipe as load_tokenizer_recipe
from seed_hf.training.tokenizer_stages import main as tokenizer_main

RECIPE_CLASSES = {"tokenizer_": TokenizerRecipe, "llm_": LlmRecipe, "shapes_": ShapesRecipe}


def recipe_class_of(name: str) -> type:
    (recipe_class,) = [cls for prefix, cls in RECIPE_CLASSES.items() if name.startswith(prefix)]
    return recipe_class


def assert_holds(loaded, written, where=""):
    """Every value written in the file is in the loaded recipe, unchanged (sections recursively)."""
    for key, value in written.items():
        got = loaded[key] if isinstance(loaded, dict) else getattr(loaded, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(got):
            assert_holds(got, value, f"{where}{key}.")
        else:
            assert got == value, f"{where}{key}: {got!r} != {value!r}"


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_recipe_loads_into_its_dataclasses_unchanged(path):
    recipe_class = recipe_class_of(path.stem)
    recipe = recipes.load_recipe(recipe_class, path.stem)
    assert type(recipe) is recipe_class
    assert_holds(recipe, read_yaml(path.read_text()))


def test_shapes_schedules_load_with_overrides():
    smoke = load_shapes_recipe("smoke", ["decoder.training.max_steps=7", "num_threads=1"])
    assert smoke.decoder.training["max_steps"] == 7 and smoke.num_threads == 1
    assert smoke.llm.lora.lora["r"] == 2 and smoke.llm.sft.chat_template == "vicuna"
    assert smoke.tokenized.batch_size == 32 and smoke.vae.kl_weight == 1e-6
    full = load_shapes_recipe("full")
    assert isinstance(full.llm.sft, LlmRecipe) and full.llm.sft.stage == "full" and full.llm.sft.packing
    # a key the file leaves out takes the field's default, as the stages did with `.get(key, default)`
    assert full.tokenizer_stage2.settings == {
        "codebook_restart_every": 50,
        "generation_loss_weight": 2.0,
        "attribute_loss_weight": 20.0,
    }
    with pytest.raises(
        ValueError, match=r"`schedule` must be one of \('smoke', 'full'\) or a recipe file, got 'tiny'"
    ):
        load_shapes_recipe("tiny")


# ------------------------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.caption_sampels=8",
            r"unknown key 'caption_sampels' under 'data' \(did you mean 'caption_samples'\?\); the valid keys "
            r"there are \['caption_chat_samples', 'caption_samples',",
        ),
        ("teacher.training=5", r"^'teacher.training' must be a mapping, got 5$"),
        (
            "teacher.training.max_stpes=3",
            r"unknown key 'max_stpes' under 'teacher.training' \(did you mean 'max_steps'\?\): not a "
            "TrainingArguments field",
        ),
        ("llm.lora.lora.rr=2", r"unknown key 'rr' under 'llm.lora.lora' \(did you mean 'r'\?\)"),
        ("sead=1", r"unknown key 'sead' at the top level \(did you mean 'seed'\?\)"),
        ("data.vqa_samples=many", r"^'data.vqa_samples' must be int, got 'many'$"),
        ("data.vqa_samples=true", r"^'data.vqa_samples' must be int, got True$"),
        (
            "teacher.training.learning_rate=fast",
            r"^'teacher.training.learning_rate' must be float, got 'fast'$",
        ),
        ("teacher=[1]", r"^'teacher' must be a mapping, got \[1\]$"),
        (
            "llm.sft.stage=merged",
            r"^'llm.sft': `stage` must be one of \('lora', 'merge', 'full'\), got 'merged'$",
        ),
        (
            "teacher.projection_dim.x=3",
            r"override 'teacher.projection_dim.x=3': 'projection_dim' is not a mapping",
        ),
        (
            "teacher.training.max_steps",
            r"override 'teacher.training.max_steps' must look like dotted.key=value",
        ),
    ],
)
def test_misspelt_or_mistyped_overrides_are_refused_by_name(override, message):
    with pytest.raises(ValueError, match=message):
        load_shapes_recipe("smoke", [override])


def test_overrides_are_yaml_1_2_and_may_add_keys_the_file_leaves_out():
    values = apply_overrides(
        {"training": {"seed": 0}},
        [
            "training.learning_rate=1e-4",  # YAML 1.1 would read a string
            "training.save_strategy=no",  # and this a boolean
            "training.report_to=[tensorboard, wandb]",
            "model.settings.label_smoothing=0.1",
            "data=null",
        ],
    )
    assert values == {
        "training": {
            "seed": 0,
            "learning_rate": 1e-4,
            "save_strategy": "no",
            "report_to": ["tensorboard", "wandb"],
        },
        "model": {"settings": {"label_smoothing": 0.1}},
        "data": None,
    }
    recipe = parse_recipe(TokenizerRecipe, {"stage": 1, **values})
    assert (
        recipe.model.settings == {"label_smoothing": 0.1} and recipe.data.split == "train"
    )  # null: defaults
    assert recipe.training["learning_rate"] == 1e-4


def test_the_same_override_syntax_reaches_every_stage():
    tokenizer = load_tokenizer_recipe(
        "tokenizer_stage1_tiny", ["data.source=x", "text_tokenizer=t", "teacher.config.hidden_size=8"]
    )
    assert tokenizer.teacher.config == {"hidden_size": 8} and tokenizer.data.source == "x"
    llm = recipes.load_recipe(LlmRecipe, "llm_sft_tiny", ["lora.target_modules=[q_proj, v_proj]"])
    assert llm.lora == {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    with pytest.raises(ValueError, match=r"unknown key 'sourse' under 'data' \(did you mean 'source'\?\)"):
        load_tokenizer_recipe("tokenizer_stage1_tiny", ["data.sourse=x"])


def test_a_missing_required_field_is_named():
    values = read_yaml((RECIPES_DIR / "shapes_smoke.yaml").read_text())
    del values["llm"]["full"]
    with pytest.raises(ValueError, match=r"^the recipe needs 'llm.full'$"):
        parse_recipe(ShapesRecipe, values)


# ------------------------------------------------------------------------------------------------------ help
def recipe_fields(recipe_class, prefix=""):
    """(dotted name, help) of every field, sections recursively (arguments sections as `name.*`)."""
    hints = typing.get_type_hints(recipe_class, include_extras=True)
    for field in dataclasses.fields(recipe_class):
        section = next(
            (
                arg
                for arg in (hints[field.name], *typing.get_args(hints[field.name]))
                if isinstance(arg, type) and dataclasses.is_dataclass(arg)
            ),
            None,
        )
        is_arguments = typing.get_origin(hints[field.name]) is typing.Annotated
        yield prefix + field.name + (".*" if is_arguments else ""), field.metadata["help"]
        if section is not None:
            yield from recipe_fields(section, f"{prefix}{field.name}.")


@pytest.mark.parametrize(("main", "recipe_class"), [(tokenizer_main, TokenizerRecipe), (llm_main, LlmRecipe)])
def test_help_lists_every_recipe_field_with_its_help(main, recipe_class, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "--set KEY.PATH=VALUE" in text
    listed = re.findall(r"^  (\S+) \(", text.split("recipe fields")[1], flags=re.MULTILINE)
    expected = list(recipe_fields(recipe_class))
    assert listed == [name for name, _ in expected]
    for name, help_text in expected:
        assert help_text and " ".join(help_text.split()) in flat, name
    assert "training.* (any transformers.TrainingArguments field)" in text


def test_shapes_help_lists_every_recipe_field():
    entries = recipes.recipe_help(ShapesRecipe)
    expected = list(recipe_fields(ShapesRecipe))
    assert [entry.split(" (")[0] for entry in entries] == [name for name, _ in expected]
    assert "llm.sft.training.* (any transformers.TrainingArguments field)" in " ".join(entries)
    assert any(entry.startswith("data.caption_samples (int, required): caption pairs") for entry in entries)
