"""Atomic writes: build a file or a checkpoint folder beside its target, then rename it into place."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)  # read the umask: setting it is the only way, so set it straight back
    os.umask(umask)
    return umask


def _apply_umask(folder: Path) -> None:
    """Give `folder` and everything in it the modes the umask gives new files: mkdtemp makes folders private, and
    safetensors writes its files 0600 whatever the umask, so a reader under another uid could not load them."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def write_file_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """
    Call `write(temporary)` for an empty temporary file beside `path`, then rename it onto `path`: a reader sees
    the old file or the whole new one, never half of it, and a failed or interrupted write leaves `path` as it
    was (the temporary file is removed). The file gets the caller's umask, as `open` would give it. Returns
    `path`.
    """
    path = Path(path)
    # a unique name per call: processes and threads writing the same target do not share a temporary file
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        write(temporary)
        temporary.chmod(0o666 & ~_umask())  # mkstemp creates the file 0600
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """[`write_file_atomically`] for a text file (UTF-8, `\\n` line ends on every platform)."""
    return write_file_atomically(
        path, lambda temporary: temporary.write_text(text, encoding="utf-8", newline="\n")
    )


def check_replaceable(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """
    `ValueError` when replacing the folder `target` would delete something the caller still needs: the current
    directory or one of its parents, or any of `inputs` (files or folders read to build the new content).
    """
    target = Path(target).resolve()
    cwd = Path.cwd().resolve()
    if cwd == target or target in cwd.parents:
        raise ValueError(
            f"refusing to replace {str(target)!r}: it is the current directory or one of its parents"
        )
    for path in inputs:
        resolved = Path(path).resolve()
        if resolved == target or target in resolved.parents:
            raise ValueError(
                f"refusing to replace {str(target)!r}: it holds the input {str(path)!r}; write to another folder"
            )


@contextmanager
def staged_directory(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """
    Yield an empty temporary folder beside `target`; on success it replaces `target` (whose old content is removed
    only once the new folder is complete), on error it is deleted and `target` is left as it was. The folder gets
    the caller's umask, as `save_pretrained` would give it, and so does every file
    written in it. A `target` that holds the current directory or any of
    `inputs` is refused up front (`ValueError`, see [`check_replaceable`]).
    """
    target = Path(target)
    check_replaceable(target, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        _apply_umask(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.rename(retired / target.name)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
