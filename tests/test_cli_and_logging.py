"""The `seed-hf` command line (help, version, errors) and the package's logging."""

from __future__ import annotations

import argparse
import ast
import logging
import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from transformers.utils import logging as transformers_logging

from seed_hf import cli
from seed_hf.logging_utils import get_logger

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("seed_hf", "modeling", "pipelines", "training")
# library functions that print their results (the dry-run plan, the pushed URL) rather than status
PRINTING_FUNCTIONS = {("seed_hf/push.py", "push_folder")}
AVOIDABLE_WARNINGS = ("requires torchvision", "UNEXPECTED", "to instantiate a model of type")


def _run_python(code: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=300
    )


class _ParserCaptured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _command_parser(monkeypatch, command: str) -> argparse.ArgumentParser:
    """The parser a sub-command's entry function builds, caught when it parses."""

    def capture(parser, *args, **kwargs):
        raise _ParserCaptured(parser)

    module_name, function_name, _ = cli.COMMANDS[command]
    entry = getattr(import_module(module_name), function_name)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_ParserCaptured) as caught:
        entry([])
    return caught.value.parser


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_of_every_command_has_a_help_text(monkeypatch, command):
    parser = _command_parser(monkeypatch, command)
    undocumented = [
        action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert not undocumented, f"seed-hf {command}: arguments without help: {undocumented}"


def test_every_global_flag_has_a_help_text():
    parser = cli.build_parser()
    assert all((action.help or "").strip() for action in parser._actions)


def test_version_and_help_print_without_running_a_command():
    result = _run_python("from seed_hf.cli import main; main(['--version'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "seed-hf 0.1.0"
    result = _run_python("from seed_hf.cli import main; main(['--help'])")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in cli.COMMANDS)


def test_help_imports_neither_torch_nor_transformers():
    result = _run_python(
        "import sys\nfrom seed_hf.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_bad_input_is_one_error_line_with_usage_exit_code(tmp_path, capsys):
    code = cli.main(["evaluate-shapes", "--model", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("seed-hf evaluate-shapes: error: `model_dir` must be a SEED checkpoint folder")
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_debug_flag_shows_the_exception(tmp_path):
    with pytest.raises(ValueError, match="model_dir"):
        cli.main(
            ["--debug", "evaluate-shapes", "--model", str(tmp_path), "--output-dir", str(tmp_path / "o")]
        )


def test_package_loggers_follow_transformers_verbosity():
    logger = get_logger("seed_hf.training.shapes.evaluate")
    verbosity = transformers_logging.get_verbosity()
    package_logger = logging.getLogger("seed_hf")
    package_level = package_logger.level
    package_logger.setLevel(logging.NOTSET)  # as in a library user's process (the CLI sets INFO)
    try:
        transformers_logging.set_verbosity_error()
        assert not logger.isEnabledFor(logging.WARNING)
        transformers_logging.set_verbosity_info()
        assert logger.isEnabledFor(logging.INFO)
    finally:
        transformers_logging.set_verbosity(verbosity)
        package_logger.setLevel(package_level)


def test_no_print_for_status_in_the_package():
    """`print` is for a command's results: only inside the command entry functions (`main`)."""
    printing = []
    for folder in PACKAGE_FOLDERS:
        for path in sorted((ROOT / folder).glob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text())
            functions = [
                node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            owner = {
                id(call): function.name
                for function in functions
                for call in ast.walk(function)
                if isinstance(call, ast.Call)
            }
            for call in ast.walk(tree):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print":
                    function = owner.get(id(call))
                    if function != "main" and (relative, function) not in PRINTING_FUNCTIONS:
                        printing.append(f"{relative}:{call.lineno} ({function})")
    assert not printing, printing


def test_main_job_prints_no_avoidable_warning(tmp_path):
    result = _run_python(
        f"from seed_hf.main_job import main; raise SystemExit(main(['--output-dir', {str(tmp_path)!r}]))"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if any(text in line for text in AVOIDABLE_WARNINGS)]
    assert not warnings, warnings
