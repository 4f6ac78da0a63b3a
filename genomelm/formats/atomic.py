"""Atomic outputs (DESIGN.md house rule 8) and the output-path checks every command shares.

Every output is written to a hidden temporary sibling of its final path (same directory, so the
final ``os.replace`` is a rename on one file system), flushed to disk, and renamed onto the path only
when the whole output is complete. On any failure, including Ctrl-C and SIGTERM (the CLI raises
those as exceptions), the temporary file or directory is removed: a failed run never leaves
something that looks complete. A full disk or a file-size limit becomes one line naming the output
(``cannot write OUT: no space left on the device``), exit 1.

No torch here: format modules use it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from genomelm.errors import InputError, UsageError

# errno -> the reason a write failed for lack of room (the one-line message's tail).
NO_ROOM = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (file-size limit, e.g. ulimit -f)",
    errno.EDQUOT: "disk quota exceeded",
}

_SHORT_WRITE = "requested and"  # numpy: "2400 requested and 1000 written"

# Files a model directory is read from: an output naming one of them would destroy the model.
MODEL_FILES = ("config.json", "model.safetensors", "weights.ckpt", "pytorch_model.bin", "prompt.safetensors")


# --------------------------------------------------------------------------- errors


def no_room(path: str | os.PathLike, exc: BaseException) -> InputError | None:
    """The one-line error for a write that failed for lack of room, or None for any other failure."""
    reason = NO_ROOM.get(getattr(exc, "errno", None))
    if reason is None and _SHORT_WRITE in str(exc):  # numpy's tofile() reports a short write without errno
        reason = "short write: no space left on the device or file too large"
    return None if reason is None else InputError(f"cannot write {os.fspath(path)}: {reason}")


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn ENOSPC / EFBIG / EDQUOT raised inside the block into ``no_room``'s InputError."""
    try:
        yield
    except OSError as exc:
        error = no_room(path, exc)
        if error is None:
            raise
        raise error from None


# --------------------------------------------------------------------------- files


def temporary_sibling(path: str | os.PathLike, suffix: str = "") -> str:
    """A hidden, unused name beside ``path`` ending in ``suffix`` (htslib and tabix read suffixes)."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def discard(*paths: str | os.PathLike | None) -> None:
    """Remove temporary files or directories that exist; never raises (the caller is already failing)."""
    for path in paths:
        if path is None:
            continue
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def publish(temporary: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync a finished temporary file and rename it onto ``path`` (the moment the output appears)."""
    with write_errors(path):
        _fsync_file(temporary)
        os.replace(temporary, path)
        _fsync_dir(os.path.dirname(os.path.abspath(os.fspath(path))))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path`` for a writer that opens files itself (pysam, safetensors);
    on success it is published onto ``path``, on failure removed."""
    temporary = temporary_sibling(path, suffix)
    try:
        with write_errors(path):
            yield temporary
        publish(temporary, path)
    except BaseException:
        discard(temporary)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", suffix: str = "", **open_args) -> Iterator[IO]:
    """``open(path, mode)`` through a temporary sibling: the file appears at ``path`` only complete."""
    with atomic_path(path, suffix) as temporary:
        with open(temporary, mode, **open_args) as handle:
            yield handle


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory beside ``path``; on success it replaces ``path`` (an existing
    directory is moved aside first and removed once the new one is in place), on failure it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _apply_umask(staging, 0o777)  # mkdtemp makes it private (0700); outputs are meant to be shared
        with write_errors(target):
            yield staging
            for child in staging.rglob("*"):
                if child.is_file():
                    _apply_umask(child, 0o666)
                    _fsync_file(child)
        replace_directory(staging, target)
    except BaseException:
        discard(staging)
        raise


def replace_directory(staging: Path, target: Path) -> None:
    """Move a finished directory onto ``target``; an existing one is replaced only once the new one is whole."""
    with write_errors(target):
        if target.exists():
            old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)


def _apply_umask(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` less the process umask, as a plain open()/mkdir() would have."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str | os.PathLike) -> None:
    # The rename itself is durable only once the directory entry is; some file systems refuse: fine.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_file(path: str | os.PathLike, what: str = "output") -> None:
    """InputError (exit 1, as for a missing input) unless a file can be created at ``path``: its directory
    exists (it is never created for a file output), it is not a directory, and the directory is writable.
    Checked before any work, by every command, for every file output; '-' (stdout) always passes."""
    path = os.fspath(path)
    if path == "-":
        return
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise InputError(f"{what} directory does not exist: {directory}")
    if os.path.isdir(path):
        raise InputError(f"{what} path is a directory: {path}")
    probe = None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".genomelm-probe-")
        os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write the {what} in {directory} ({exc.strerror})") from None
    finally:
        if probe is not None:
            os.unlink(probe)


# --------------------------------------------------------------------------- output names an input


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file (same inode; symlinks and relative paths resolved).
    '-' (stdin/stdout) is never the same file as anything."""
    if os.fspath(a) == "-" or os.fspath(b) == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare the resolved names
        return os.path.realpath(a) == os.path.realpath(b)


def inside(path: str | os.PathLike, directory: str | os.PathLike) -> bool:
    """True when ``path`` lies in ``directory`` (or is it), symlinks resolved."""
    if os.fspath(path) == "-" or os.fspath(directory) == "-":
        return False
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


def input_files(paths: Iterable[str | os.PathLike | None]) -> list[str]:
    """The files behind the given inputs: a file as is; a model directory as the files it is read from."""
    files = []
    for path in paths:
        if path is None or os.fspath(path) == "-":
            continue
        if os.path.isdir(path):
            files += [os.path.join(path, name) for name in MODEL_FILES if os.path.exists(os.path.join(path, name))]
        else:
            files.append(os.fspath(path))
    return files


def refuse_overwriting_inputs(
    outputs: dict[str, str | os.PathLike | None],
    inputs: Iterable[str | os.PathLike | None],
    directories: Iterable[str] = (),
) -> None:
    """UsageError (exit 2) when an output would destroy an input: the same file (inode, so symlinks and
    hard links count), or, for the outputs named in ``directories`` (a directory created or replaced
    whole), a directory holding an input. ``outputs`` maps a label ('--output') to the path; None and
    '-' entries are ignored, and so are inputs that are '-' (stdin)."""
    files = input_files(inputs)
    for option, output in outputs.items():
        if output is None or os.fspath(output) == "-":
            continue
        for source in files:
            if same_file(source, output) or (option in directories and inside(source, output)):
                raise UsageError(f"{option} {os.fspath(output)} would overwrite the input {source}; choose another")
