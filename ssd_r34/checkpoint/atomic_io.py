"""Crash-safe checkpoint files (docs/distributed.md, "Survive a crash"): fvcore's
``Checkpointer.save`` gets a path manager whose writes go to a temporary file, fsynced and
``os.replace``d onto the target, so a kill never leaves a truncated file for ``--resume``."""
import contextlib
import logging
import os
import re

__all__ = ["AtomicPathManager", "CheckpointWriteError", "make_checkpointer_atomic"]

logger = logging.getLogger(__name__)

# ".<basename>.<pid>.tmp": hidden, and not a .pth that anything would list as a checkpoint.
_TMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder...); the message names
    the file (``path``), the cause and the unchanged last good checkpoint (``last_good``)."""

    def __init__(self, message: str, path: str = "", last_good: str = ""):
        super().__init__(message)
        self.path, self.last_good = path, last_good


class _AtomicFile:
    """A file open for writing that replaces ``target`` only on a clean close. The first
    OSError of a write or close goes to ``owner.last_error`` (torch.save reports a failed
    write as an unrelated "unexpected pos" RuntimeError)."""

    def __init__(self, target: str, mode: str, owner, *args, **kwargs):
        self._done, self._owner, self._target = True, owner, target  # done until opened
        folder, base = os.path.split(os.path.abspath(target))
        self._tmp = os.path.join(folder, f".{base}.{os.getpid()}.tmp")
        self._file = open(self._tmp, mode, *args, **kwargs)
        self._done = False

    def _record(self, e: OSError) -> None:
        if self._owner.last_error is None:
            self._owner.last_error = e

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as e:
            self._record(e)
            raise

    def flush(self):
        self._file.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close() if exc_type is None else self.discard()

    def close(self):
        if self._done:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._target)
        except OSError:  # e.g. the disk filled up at the flush: never leave the part
            self.discard()
            raise
        finally:
            self._done = True
        with contextlib.suppress(OSError):  # the rename itself; some file systems refuse
            fd = os.open(os.path.dirname(os.path.abspath(self._target)), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self):  # drop what was written; the target stays as it was
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):  # flushing the rest may fail too
                self._file.close()
            with contextlib.suppress(OSError):
                os.remove(self._tmp)

    def __del__(self):  # garbage-collected without close(): never publish a partial file
        with contextlib.suppress(Exception):
            self.discard()


class AtomicPathManager:
    """An iopath PathManager whose ``open`` for writing (``w``) a local path is atomic;
    everything else goes to the wrapped manager."""

    def __init__(self, path_manager):
        self._path_manager = path_manager
        self.last_error = None  # the first OSError of an atomic write since it was reset

    def open(self, path, mode="r", *args, **kwargs):
        if "w" in mode and "+" not in mode and ("://" not in path or path.startswith("file://")):
            return _AtomicFile(path.removeprefix("file://"), mode, self, *args, **kwargs)
        return self._path_manager.open(path, mode, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)


def make_checkpointer_atomic(checkpointer):
    """Make ``checkpointer.save`` crash-safe, in place (idempotent), and remove the temporary
    files of a process killed while saving to its folder; returns it."""
    if not isinstance(checkpointer.path_manager, AtomicPathManager):
        checkpointer.path_manager = AtomicPathManager(checkpointer.path_manager)
    folder = checkpointer.save_dir if getattr(checkpointer, "save_to_disk", True) else ""
    for name in os.listdir(folder) if folder and os.path.isdir(folder) else []:
        m = _TMP_RE.match(name)
        if m and int(m[1]) != os.getpid():
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                logger.info(f"Removed {name}, left by a save that did not finish.")
    return checkpointer
