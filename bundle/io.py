"""File I/O of the bundle: atomic writes (a reader never sees a half-written file, and a failed write keeps the
old one), JSON reading with errors that name the file, and what makes a path unreadable (the model file has its
own module, :mod:`bundle.networks.model_file`)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from bundle.errors import InputError, InputFileError

__all__ = [
    "unreadable_reason",
    "lock_folder",
    "atomic_write",
    "atomic_write_json",
    "atomic_save",
    "atomic_save_nifti",
    "write_files",
    "publish_files",
    "read_json",
    "file_signature",
]


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """Why something at ``path`` cannot be read as a file, or ``None`` when it is a readable regular file.

    Only an absent name means "no file"; a folder, a dangling symlink, a symlink loop, a device or a
    file without read permission at that name is a problem the user must fix, never a missing file.

    Returns:
        ``None``, ``"absent"``, or a phrase such as ``"a dangling symlink (to /x)"``.

    Example:
        >>> unreadable_reason("/nowhere/at/all.nii.gz")
        'absent'
    """
    if not os.path.lexists(path):
        return "absent"
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symlink loop"
        if error.errno == errno.ENOENT:
            return f"a dangling symlink (to {os.readlink(path)})"
        return f"not readable ({error.strerror})"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HELD_LOCKS: dict[str, IO[str]] = {}


def lock_folder(folder: str | os.PathLike, name: str = ".lock") -> Path:
    """Hold an exclusive lock on ``folder`` until this process exits (``folder/.lock``, created).

    A second training into the same ``ckpt_dir`` would silently replace the first one's best model;
    with the lock it stops at once with an error naming the other process. The operating system drops
    the lock when the process ends, however it ends, so a killed run never leaves a stale lock.

    Returns:
        The lock file.

    Raises:
        InputError: when another process holds the lock.
    """
    import fcntl

    path = Path(folder) / name
    if str(path.resolve()) in _HELD_LOCKS:
        return path
    Path(folder).mkdir(parents=True, exist_ok=True)
    file = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        raise InputError(
            f"another run ({holder}) is writing to {folder}; wait for it to finish or stop it, or point --ckpt_dir "
            "at another folder. Two trainings in one folder would overwrite each other's checkpoints."
        ) from None
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {os.uname().nodename}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    file.flush()
    _HELD_LOCKS[str(path.resolve())] = file
    return path


def atomic_save(path: str | os.PathLike, save: Callable[[str], None]) -> Path:
    """Call ``save(temporary path)`` for a file beside ``path`` with the same extension, fsync it, rename it over ``path``.

    The one mechanism behind every atomic write of the bundle. A full disk or a kill leaves no empty or
    half-written file under ``path``, and an older one intact; the new file keeps the older one's mode
    (else the mode a plain write would give). The extension matters to writers that take a file name
    (nibabel picks the format from it).

    Args:
        path: destination; its folder must exist and be writable.
        save: writes the temporary file, given its name.

    Returns:
        The destination path.

    Raises:
        OSError: when the folder is not writable or the disk is full; ``path`` is then unchanged.
    """
    target = Path(path)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix
    # a prefix of the name only: the temporary name must not be longer than the final one (255 bytes at most)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(handle)
    try:
        save(temp_name)
        with open(temp_name, "rb") as file:
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); keep the mode a plain write would give
        os.chmod(temp_name, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on an open binary temporary file, then put it in place (see :func:`atomic_save`)."""

    def save(temp_name: str) -> None:
        with open(temp_name, "wb") as file:
            write(file)

    return atomic_save(path, save)


def write_files(contents: Mapping[str, bytes], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write each ``{file name: bytes}`` into ``output_dir`` (created), each atomically; return the paths by name."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: atomic_write(folder / name, lambda file, data=data: file.write(data)) for name, data in contents.items()
    }


def atomic_save_nifti(image: Any, path: str | os.PathLike) -> Path:
    """``nibabel.save(image, path)`` atomically (see :func:`atomic_save`)."""
    import nibabel as nib

    return atomic_save(path, lambda temp_name: nib.save(image, temp_name))


def publish_files(
    contents: Mapping[str, bytes], output_dir: str | os.PathLike, name: str = "report"
) -> dict[str, Path]:
    """Write a set of files that readers must only ever see together: ``output_dir/name/<file>``.

    The files go into a new folder ``output_dir/.name-versions/<time>-<random>/``; then the symlink
    ``output_dir/name`` is pointed at it in one atomic rename, and older versions are deleted. A kill
    or a failed write at any point leaves ``output_dir/name`` showing the complete old set or the
    complete new one, never a mix.

    Args:
        contents: ``{file name: bytes}``.
        output_dir: folder holding the set's link (created).
        name: the link's name.

    Returns:
        ``{file name: path through the link}``.

    Raises:
        OSError: when a file cannot be written; the previous set is kept.
        InputError: when ``output_dir/name`` is a real folder (from an older version), which is never replaced.
    """
    root = Path(output_dir)
    link = root / name
    if link.is_dir() and not link.is_symlink():
        raise InputError(
            f"{link} is a folder; move it away, the reports are written as a link to a new folder each time."
        )
    versions = root / f".{name}-versions"
    versions.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=versions))
    try:
        write_files(contents, new)
        os.chmod(new, 0o777 & ~_umask())
        temp_link = versions / f".link-{new.name}"
        os.symlink(os.path.relpath(new, root), temp_link)
        os.replace(temp_link, link)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    for old in versions.iterdir():
        if old == new:
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return {file_name: link / file_name for file_name in contents}


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    text = json.dumps(obj, indent=4) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with an error naming the file when it is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise InputFileError(f"{path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error}); fix or delete it.") from None


def file_signature(path: str | os.PathLike) -> str:
    """Size, modification time, inode and inode change time of a file: what tells a rewritten file from the one
    seen before. A file rewritten with its size and mtime restored still changes its ctime, which no user call can
    set back."""
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}:{info.st_ctime_ns}"
