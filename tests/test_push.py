"""`seed-hf push` and the `push_to_hub` options of the checkpoint writers, offline.

The only test double sits at the `HfApi` boundary: a subclass that records `create_repo`, `create_branch` and
`create_commit` and answers with the values the real client returns (`RepoUrl`, `CommitInfo`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl

import seed_hf.push
from seed_hf.cli import main as cli_main
from seed_hf.push import PICKLE_SUFFIXES, collect_upload_files, push_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_FOLDER = "models/seed-shapes"

# A trainer output with remote code, components, and everything a push must leave behind.
SYSTEM_FILES = [
    "model.safetensors",
    "config.json",
    "modeling_x.py",
    "README.md",
    "visual_tokenizer/model.safetensors",
    "visual_tokenizer/config.json",
    "detokenizer/unet/diffusion_pytorch_model.safetensors",
    "checkpoint-5/trainer_state.json",
    "checkpoint-5/optimizer.pt",  # a pickle, but inside a left-out folder: no refusal
    "logs/events.out.tfevents.1",
    "runs/x.log",
    "__pycache__/a.pyc",
    ".staging.abc/config.json",
]
SYSTEM_UPLOADS = [
    "README.md",
    "config.json",
    "detokenizer/unet/diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "modeling_x.py",
    "visual_tokenizer/config.json",
    "visual_tokenizer/model.safetensors",
]
SYSTEM_LEFT_OUT = [".staging.abc/", "__pycache__/", "checkpoint-5/", "logs/", "runs/"]


class RecordingHfApi(HfApi):
    """Records the repo, branch and commit calls instead of sending them; every instance lands in `instances`."""

    instances: list[RecordingHfApi] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_kwargs = kwargs
        self.calls: list[tuple[str, str, dict]] = []
        type(self).instances.append(self)

    def _url(self, repo_id: str, repo_type: str | None) -> str:
        # as the Hub does, a repo id without namespace lands in the token owner's ("me")
        repo_id = repo_id if "/" in repo_id else f"me/{repo_id}"
        return f"{self.endpoint}/{'spaces/' if repo_type == 'space' else ''}{repo_id}"

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return RepoUrl(self._url(repo_id, kwargs.get("repo_type")), endpoint=self.endpoint)

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        kwargs["operations"] = list(operations)
        self.calls.append(("create_commit", repo_id, kwargs))
        return CommitInfo(
            commit_url=f"{self._url(repo_id, kwargs.get('repo_type'))}/commit/{'0' * 40}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid="0" * 40,
            _endpoint=self.endpoint,
        )

    def named(self, name: str) -> list[tuple[str, dict]]:
        return [(repo_id, kwargs) for called, repo_id, kwargs in self.calls if called == name]

    def committed_paths(self) -> list[str]:
        ((_, commit),) = self.named("create_commit")
        return sorted(operation.path_in_repo for operation in commit["operations"])


@pytest.fixture
def hub(monkeypatch) -> type[RecordingHfApi]:
    """The recording client, installed as the factory `seed_hf.push` builds its `HfApi` with."""
    recording = type("RecordingHfApiForTest", (RecordingHfApi,), {"instances": []})
    monkeypatch.setattr(seed_hf.push, "HfApi", recording)
    return recording


@pytest.fixture
def no_hub(monkeypatch):
    """A factory that fails the test if `seed_hf.push` builds a client at all."""

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run or a refused push must not build an HfApi")

    monkeypatch.setattr(seed_hf.push, "HfApi", refuse)


def _write_files(folder: Path, names: list[str]) -> Path:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
    return folder


@pytest.fixture
def system_folder(tmp_path) -> Path:
    return _write_files(tmp_path / "seed-system", SYSTEM_FILES)


def _uploads_in_plan(plan: str) -> list[str]:
    return [line.split()[1] for line in plan.splitlines() if line.startswith("  upload  ")]


def test_collect_upload_files_keeps_code_and_leaves_out_training_state(system_folder):
    uploads, left_out = collect_upload_files(system_folder)
    assert [path_in_repo for path_in_repo, _ in uploads] == SYSTEM_UPLOADS
    assert all(path == system_folder / path_in_repo for path_in_repo, path in uploads)
    assert left_out == SYSTEM_LEFT_OUT


@pytest.mark.parametrize("revision", [None, "v1"])
def test_push_is_one_commit_of_the_checkpoint_files(system_folder, hub, revision, capsys):
    argv = ["push", str(system_folder), "org/seed-system", "--private", "--token", "hf_test"]
    argv += ["--commit-message", "Add the SEED system"] + (["--revision", revision] if revision else [])
    assert cli_main(argv) == 0

    (api,) = hub.instances
    assert api.init_kwargs == {"token": "hf_test"}
    assert [name for name, _, _ in api.calls] == ["create_repo"] + (["create_branch"] if revision else []) + [
        "create_commit"
    ]
    ((repo_id, repo),) = api.named("create_repo")
    assert (repo_id, repo["private"], repo["exist_ok"], repo["repo_type"]) == (
        "org/seed-system",
        True,
        True,
        "model",
    )
    if revision:
        ((_, branch),) = api.named("create_branch")
        assert (branch["branch"], branch["exist_ok"]) == (revision, True)
    ((_, commit),) = api.named("create_commit")
    assert api.committed_paths() == SYSTEM_UPLOADS
    assert (commit["commit_message"], commit["revision"], commit["token"]) == (
        "Add the SEED system",
        revision,
        "hf_test",
    )
    operation = next(op for op in commit["operations"] if op.path_in_repo == "modeling_x.py")
    assert Path(operation.path_or_fileobj).read_text() == "content of modeling_x.py\n"
    assert "https://huggingface.co/org/seed-system" in capsys.readouterr().out


def test_without_private_the_namespace_default_visibility_applies(system_folder, hub):
    assert cli_main(["push", str(system_folder), "org/seed-system"]) == 0
    ((_, repo),) = hub.instances[0].named("create_repo")
    assert repo["private"] is None


@pytest.mark.parametrize(
    "pickle_file",
    [
        "training_args.bin",
        "optimizer.pt",
        "rng_state.pth",
        "pytorch_model.bin",
        "visual_tokenizer/model.ckpt",
    ],
)
def test_pickles_are_refused_before_anything_is_contacted(system_folder, pickle_file):
    _write_files(system_folder, [pickle_file])
    api = RecordingHfApi()
    with pytest.raises(ValueError, match=re.escape(pickle_file)):
        push_folder(system_folder, "org/seed-system", api=api)
    assert api.calls == []


def test_every_pickle_suffix_is_refused_and_all_offenders_are_named(system_folder):
    offenders = [f"weights/part{suffix}" for suffix in PICKLE_SUFFIXES] + ["UPPER.PT"]
    _write_files(system_folder, offenders)
    with pytest.raises(ValueError) as refusal:
        collect_upload_files(system_folder)
    assert all(name in str(refusal.value) for name in offenders)


def _git_files(*options: str) -> set[str] | None:
    listed = subprocess.run(
        ["git", "ls-files", *options, SHIPPED_FOLDER],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        return None
    return {Path(line).relative_to(SHIPPED_FOLDER).as_posix() for line in listed.stdout.splitlines()}


def test_dry_run_of_the_shipped_checkpoint_lists_every_shipped_file(no_hub, monkeypatch, capsys):
    # What git ships: the tracked files plus new files not ignored (a regenerated checkpoint not yet committed),
    # less tracked files deleted from the working tree. Once committed this is exactly `git ls-files`.
    shipped, deleted = _git_files("--cached", "--others", "--exclude-standard"), _git_files("--deleted")
    if not shipped or deleted is None:
        pytest.skip("not a git checkout with the shipped models/seed-shapes")
    shipped = sorted(shipped - deleted)
    monkeypatch.chdir(REPO_ROOT)

    assert cli_main(["push", "--dry-run", SHIPPED_FOLDER, "org/seed-shapes"]) == 0
    plan = capsys.readouterr().out
    uploads = _uploads_in_plan(plan)
    assert uploads == shipped  # every shipped file is one a user needs
    assert not [line for line in plan.splitlines() if line.startswith("  skip  ")]
    assert all(
        re.fullmatch(r"  upload  \S+  \d+(\.\d)? (B|kB|MB|GB)", line)
        for line in plan.splitlines()
        if line.startswith("  upload  ")
    )
    weights = [path for path in uploads if Path(path).stem in ("model", "diffusion_pytorch_model")]
    assert weights and all(path.endswith(".safetensors") for path in weights)
    assert not [path for path in uploads if path.lower().endswith(PICKLE_SUFFIXES)]


def test_dry_run_shows_what_is_left_out_and_returns_the_plan(system_folder, no_hub, capsys):
    plan = push_folder(system_folder, "org/seed-system", dry_run=True)
    assert plan == capsys.readouterr().out.rstrip("\n")
    assert _uploads_in_plan(plan) == SYSTEM_UPLOADS
    assert [line.split()[1] for line in plan.splitlines() if line.startswith("  skip    ")] == SYSTEM_LEFT_OUT


@pytest.mark.parametrize(
    "make_folder, repo_id, named",
    [
        (
            lambda folder: _write_files(folder, ["config.json", "training_args.bin"]),
            "org/x",
            "training_args.bin",
        ),
        (lambda folder: folder, "org/x", "not found"),
        (lambda folder: folder.mkdir() or folder, "org/x", "no files"),
        (lambda folder: _write_files(folder, ["config.json"]), "org/x/too/deep", "org/x/too/deep"),
    ],
    ids=["pickle", "missing-folder", "empty-folder", "bad-repo-id"],
)
def test_cli_input_errors_are_one_line_and_exit_code_2(tmp_path, no_hub, capsys, make_folder, repo_id, named):
    folder = make_folder(tmp_path / "checkpoint")
    assert cli_main(["push", str(folder), repo_id]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("seed-hf push: error: ") and named in line
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "repo_type, url",
    [("model", "https://huggingface.co/org/demo"), ("space", "https://huggingface.co/spaces/org/demo")],
)
def test_the_repo_url_is_printed_after_the_push(system_folder, hub, capsys, repo_type, url):
    assert cli_main(["push", str(system_folder), "org/demo", "--repo-type", repo_type]) == 0
    ((repo_id, repo),) = hub.instances[0].named("create_repo")
    assert (repo_id, repo["repo_type"], repo["space_sdk"]) == (
        "org/demo",
        repo_type,
        "gradio" if repo_type == "space" else None,
    )
    ((_, commit),) = hub.instances[0].named("create_commit")
    assert commit["repo_type"] == repo_type
    printed = capsys.readouterr().out
    assert re.search(rf"{re.escape(url)}(\s|$)", printed)
    assert push_folder(system_folder, "org/demo", repo_type=repo_type, api=RecordingHfApi()) == url
    # the URL is the one the Hub answers with: an id without namespace lands in the token owner's
    assert push_folder(system_folder, "demo", repo_type=repo_type, api=RecordingHfApi()) == url.replace(
        "org", "me"
    )


def _written_files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def test_save_seed_checkpoint_pushes_the_written_folder(tmp_path):
    from seed_llama_fixtures import (
        build_tiny_processor,
        build_tiny_seed_llama,
        build_tiny_tokenizer,
        build_tiny_visual_tokenizer,
    )
    from seed_unclip_fixtures import tiny_unclip_components

    from seed_hf.checkpoint import save_seed_checkpoint
    from seed_hf.pipelines.pipeline_seed_unclip import SeedUnCLIPPipeline

    tokenizer = build_tiny_tokenizer()
    parts = {
        "model": build_tiny_seed_llama(tokenizer),
        "processor": build_tiny_processor(tokenizer),
        "visual_tokenizer": build_tiny_visual_tokenizer(),
        "detokenizer": SeedUnCLIPPipeline(seed_tokenizer=None, **tiny_unclip_components()),
    }
    folder = tmp_path / "seed-tiny"
    api = RecordingHfApi()
    save_seed_checkpoint(folder, **parts, push_to_hub=True, repo_id="org/seed-tiny", private=True, api=api)

    written = _written_files(folder)
    assert {"config.json", "visual_tokenizer/config.json", "detokenizer/model_index.json"} <= set(written)
    assert api.committed_paths() == written
    ((repo_id, repo),) = api.named("create_repo")
    assert (repo_id, repo["private"]) == ("org/seed-tiny", True)

    # transformers' convention: without repo_id, the folder's name
    api = RecordingHfApi()
    assert save_seed_checkpoint(folder, **parts, push_to_hub=True, api=api) == folder
    assert [repo_id for repo_id, _ in api.named("create_repo")] == ["seed-tiny"]

    api = RecordingHfApi()
    save_seed_checkpoint(folder, **parts, repo_id="org/seed-tiny", api=api)  # push_to_hub off
    assert api.calls == []


def test_convert_llama_push_to_hub_uploads_the_converted_folder(tmp_path, hub):
    from seed_llama_fixtures import TINY_NUM_IMAGE_CODES, save_fake_release_checkpoint

    release = save_fake_release_checkpoint(tmp_path / "release")
    output = tmp_path / "seed-llama-tiny"
    argv = ["convert-llama", str(release), str(output), "--num-image-codes", str(TINY_NUM_IMAGE_CODES)]
    assert cli_main(argv + ["--push-to-hub", "org/seed-llama-tiny", "--private"]) == 0
    (api,) = hub.instances
    ((repo_id, repo),) = api.named("create_repo")
    assert (repo_id, repo["private"]) == ("org/seed-llama-tiny", True)
    assert api.committed_paths() == _written_files(output)
    assert "model.safetensors" in api.committed_paths()

    shutil.rmtree(output)
    assert cli_main(argv) == 0  # without --push-to-hub nothing is contacted
    assert len(hub.instances) == 1
