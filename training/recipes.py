"""Training recipes: typed, nested dataclasses read from YAML files, with one override syntax for every stage.

A recipe class is a dataclass whose fields carry their documentation in `metadata={"help": ...}` (as
`transformers.TrainingArguments` does). A field may be:

- a value (`int`, `str | None`, `dict` for free-form keyword arguments such as a model config, ...);
- a section: another recipe dataclass, read from a nested mapping;
- an arguments section (annotated with [`ArgumentsOf`], e.g. [`TrainingArgumentsDict`]): a mapping of keyword arguments of a library class, such as
  `transformers.TrainingArguments`, whose keys and value types are checked against that class's fields. The class
  itself is built by the stage: `TrainingArguments` sets up devices and DeepSpeed when built, which a recipe must
  not do when it is only read (and stages add their own values, such as `output_dir`).

Loading ([`load_recipe`]): a YAML file (a shipped recipe's name in `seed_hf/training/recipes/`, or a path) ->
mapping -> overrides (`--set KEY.PATH=VALUE`, the value read as YAML) -> [`parse_recipe`], which checks every key
and value and builds each section with `transformers.HfArgumentParser.parse_dict`. YAML is read with YAML 1.2
booleans (only `true` / `false`: `save_strategy: no` stays a string) and floats (`1e-4` is a number).

[`add_recipe_arguments`] gives a stage's command line `--recipe` and `--set`, and makes its `--help` list every
recipe field.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib
import os
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml

RECIPES_DIR = Path(__file__).parent / "recipes"
RecipeT = TypeVar("RecipeT")


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 booleans (only true / false) and exponent floats without a dot (`1e-4`)."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.1 reads `1e-4` (no dot, or no exponent sign) as a string; JSON and YAML 1.2 read a number
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str) -> Any:
    """Read recipe YAML (YAML 1.2 booleans and floats, see the module docstring)."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


# ------------------------------------------------------------------------------------------------- fields
@dataclasses.dataclass
class ArgumentsOf:
    """
    Marks a `dict` recipe field as keyword arguments of a library class, checked key by key against the class's
    fields and their types: `training: Annotated[dict[str, Any], ArgumentsOf("transformers.TrainingArguments")]`.

    Args:
        class_path (`str`): the class as `"module.Class"`, imported when a recipe is checked.
        extra_values (`dict[str, tuple]`, *optional*): values a key takes besides its type's, that the stage
            resolves before building the class (`{"bf16": ("auto",)}`).
    """

    class_path: str
    extra_values: dict[str, tuple] = dataclasses.field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return self.class_path.rpartition(".")[2]


# The `training` section of a recipe: `TrainingArguments` keyword arguments (see the module docstring for why a
# mapping, not the class itself).
TrainingArgumentsDict = Annotated[dict[str, Any], ArgumentsOf("transformers.TrainingArguments")]


@functools.cache
def _arguments_hints(class_path: str) -> dict[str, Any]:
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return {field.name: _hints(cls)[field.name] for field in dataclasses.fields(cls) if field.init}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # the annotations, not `Field.type`: `HfArgumentParser` narrows the latter in place (`int | None` -> `int`)
    return typing.get_type_hints(cls, include_extras=True)


def _arguments_marker(annotation: Any) -> ArgumentsOf | None:
    if typing.get_origin(annotation) is not Annotated:
        return None
    return next((item for item in annotation.__metadata__ if isinstance(item, ArgumentsOf)), None)


def _section_class(annotation: Any) -> type | None:
    """The recipe dataclass an annotation names (alone or with `None`), if any."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a value read from YAML fits an annotation (an `int` fits `float`; a `bool` fits neither)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if _is_union(annotation):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation in (int, float):
        return isinstance(value, (int, float) if annotation is float else int) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return value in {member.value for member in annotation}
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (
            not args or all(_matches(item, args[0]) for item in value)
        )
    return isinstance(value, origin or annotation)


def _type_name(annotation: Any) -> str:
    """A short readable name of an annotation (`int | None`, `dict[str, Any]`, `SchedulerType | str`)."""
    if _section_class(annotation) is not None:
        return "a mapping"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    # drop module paths: `transformers.trainer_utils.SchedulerType` -> `SchedulerType`
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", str(annotation)).replace("NoneType", "None")


def _unknown_key(name: str, prefix: str, valid: Sequence[str], what: str | None = None) -> ValueError:
    where = f"under {prefix[:-1]!r}" if prefix else "at the top level"
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = f": not a {what} field" if what else f"; the valid keys there are {sorted(valid)}"
    return ValueError(f"unknown key {name!r} {where}{hint}{listing}")


def _check_value(value: Any, annotation: Any, dotted: str) -> None:
    if not _matches(value, annotation):
        raise ValueError(f"{dotted!r} must be {_type_name(annotation)}, got {value!r}")


def _check_arguments(values: Any, marker: ArgumentsOf, prefix: str) -> None:
    """Raise `ValueError` unless `values` is a mapping of the marked class's fields with values of their types."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{prefix[:-1]!r} must be a mapping, got {values!r}")
    hints = _arguments_hints(marker.class_path)
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(key, prefix, list(hints), marker.class_name)
        if value not in marker.extra_values.get(key, ()):
            _check_value(value, hints[key], prefix + key)


# ------------------------------------------------------------------------------------------------ parsing
def parse_recipe(recipe_class: type[RecipeT], values: Any, prefix: str = "") -> RecipeT:
    """
    Build the recipe dataclass `recipe_class` from a mapping, section by section.

    Every key must be a field (sections recursively; arguments sections against their class) and every value of
    its field's type. Raises `ValueError` naming the dotted key, and for an unknown key the valid ones.

    Args:
        recipe_class (`type`): the recipe dataclass.
        values (`Mapping`): the recipe as read from YAML (nested mappings for the sections).
        prefix (`str`, *optional*): the dotted path of `values` in the whole recipe (`"data."`), for messages.
    """
    from transformers import HfArgumentParser

    if not isinstance(values, Mapping):
        raise ValueError(f"{repr(prefix[:-1]) if prefix else 'a recipe'} must be a mapping, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(recipe_class) if field.init}
    hints = _hints(recipe_class)
    parsed = {}
    for name, value in values.items():
        if name not in fields:
            raise _unknown_key(name, prefix, list(fields))
        dotted, section = prefix + name, _section_class(hints[name])
        if section is not None and isinstance(value, Mapping):
            parsed[name] = parse_recipe(section, value, f"{dotted}.")
        elif section is not None and value is None:
            continue  # `null`: the section's defaults
        elif (marker := _arguments_marker(hints[name])) is not None:
            _check_arguments(value, marker, f"{dotted}.")
            parsed[name] = dict(value)
        else:
            _check_value(value, hints[name], dotted)
            parsed[name] = value
    required = [
        name
        for name, field in fields.items()
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    if missing := [name for name in required if name not in parsed]:
        raise ValueError(f"the recipe needs {', '.join(repr(prefix + name) for name in missing)}")
    try:
        (recipe,) = HfArgumentParser(recipe_class).parse_dict(parsed, allow_extra_keys=False)
    except ValueError as error:  # a check of the class itself (`__post_init__`): say where in the recipe
        if not prefix:
            raise
        raise ValueError(f"{prefix[:-1]!r}: {error}") from error
    return recipe


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """
    Set each `"dotted.key=value"` of `overrides` in the recipe mapping `values` (in place), the value read as
    YAML (`training.max_steps=5`, `lora.target_modules=[q_proj, v_proj]`, `model.config=null`). Missing
    mappings on the way are created; keys and values are checked later, by [`parse_recipe`].
    """
    for override in overrides:
        key, separator, value = override.partition("=")
        if not separator or not key:
            raise ValueError(f"override {override!r} must look like dotted.key=value")
        *parents, name = key.split(".")
        node = values
        for parent in parents:
            if node.get(parent) is None:
                node[parent] = {}
            node = node[parent]
            if not isinstance(node, dict):
                raise ValueError(f"override {override!r}: {parent!r} is not a mapping in the recipe")
        node[name] = read_yaml(value)
    return values


def recipe_file(name_or_path: str | os.PathLike, shipped_prefix: str = "") -> Path:
    """The file of a recipe path, or of a shipped recipe's name (`"tokenizer_stage1_tiny"`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (RECIPES_DIR / f"{path}.yaml").is_file() and path.name.startswith(shipped_prefix):
        return RECIPES_DIR / f"{path}.yaml"
    raise ValueError(
        f"recipe {str(name_or_path)!r} is neither a file nor a shipped recipe ({shipped_recipes(shipped_prefix)})"
    )


def shipped_recipes(prefix: str = "") -> list[str]:
    """The names of the shipped recipes whose names start with `prefix`."""
    return sorted(path.stem for path in RECIPES_DIR.glob(f"{prefix}*.yaml"))


def load_recipe(
    recipe_class: type[RecipeT],
    name_or_path: str | os.PathLike,
    overrides: Sequence[str] = (),
    shipped_prefix: str = "",
) -> RecipeT:
    """
    Read a recipe file (see [`recipe_file`]), apply `overrides` (see [`apply_overrides`]) and build
    `recipe_class` from it (see [`parse_recipe`]).
    """
    return parse_recipe(recipe_class, read_recipe_values(name_or_path, overrides, shipped_prefix))


def read_recipe_values(
    name_or_path: str | os.PathLike, overrides: Sequence[str] = (), shipped_prefix: str = ""
) -> dict[str, Any]:
    """The mapping of a recipe file with `overrides` applied, not yet checked (for stages that add values)."""
    path = recipe_file(name_or_path, shipped_prefix)
    try:
        values = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1}: {error.problem})" if mark else ""
        raise ValueError(f"recipe {str(path)!r} is not valid YAML{where}") from error
    if not isinstance(values, dict):
        raise ValueError(f"recipe {str(path)!r} must hold a YAML mapping, got {type(values).__name__}")
    return apply_overrides(values, overrides)


# ---------------------------------------------------------------------------------------------- command line
def recipe_help(recipe_class: type, prefix: str = "") -> list[str]:
    """One entry per field of `recipe_class` (recursively): `dotted.name (type, default): help`."""
    lines = []
    for field in dataclasses.fields(recipe_class):
        annotation, dotted = _hints(recipe_class)[field.name], prefix + field.name
        help_text = field.metadata.get("help", "")
        section = _section_class(annotation)
        if (marker := _arguments_marker(annotation)) is not None:
            lines.append(f"{dotted}.* (any {marker.class_path} field): {help_text}")
            continue
        if field.default is not dataclasses.MISSING:
            default = f", default {field.default!r}"
        elif field.default_factory is not dataclasses.MISSING and section is None:
            default = f", default {field.default_factory()!r}"
        else:
            default = "" if section is not None else ", required"
        lines.append(f"{dotted} ({_type_name(annotation)}{default}): {help_text}")
        if section is not None:
            lines += recipe_help(section, f"{dotted}.")
    return lines


def add_recipe_arguments(
    parser: argparse.ArgumentParser,
    recipe_class: type,
    shipped_prefix: str,
    example: str,
    option: str = "--recipe",
    default: str | None = None,
    option_help: str | None = None,
) -> None:
    """
    Add `--recipe` and `--set` (dest `overrides`) to a stage's parser, and list every field of `recipe_class`
    in its `--help`.

    Args:
        parser (`argparse.ArgumentParser`): the stage's parser.
        recipe_class (`type`): the stage's recipe dataclass.
        shipped_prefix (`str`): the prefix of the stage's shipped recipes (`"llm_"`).
        example (`str`): an override shown in the help (`"training.max_steps=10"`).
        option (`str`, *optional*, defaults to `"--recipe"`): the option naming the recipe.
        default (`str`, *optional*): the recipe when the option is not given (then the option is required).
        option_help (`str`, *optional*): the option's help (default: a file or one of the shipped recipes).
    """
    parser.add_argument(
        option,
        required=default is None,
        default=default,
        help=option_help
        or f"recipe file, or a shipped recipe name ({', '.join(shipped_recipes(shipped_prefix))})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help=f"override a recipe value, the value read as YAML, e.g. --set {example} (repeatable; the recipe "
        "fields are listed below)",
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    entries = [
        textwrap.fill(entry, 110, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
        for entry in recipe_help(recipe_class)
    ]
    parser.epilog = "recipe fields (--set KEY.PATH=VALUE):\n" + "\n".join(entries)


__all__ = [
    "RECIPES_DIR",
    "add_recipe_arguments",
    "apply_overrides",
    "ArgumentsOf",
    "TrainingArgumentsDict",
    "load_recipe",
    "parse_recipe",
    "read_recipe_values",
    "read_yaml",
    "recipe_file",
    "recipe_help",
    "shipped_recipes",
]
