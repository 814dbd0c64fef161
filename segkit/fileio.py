"""Writing a file or a folder so that nobody ever sees half of it: the one atomic-write path.

    with atomic_path(final) as tmp:    # tmp: ".tmp-<pid>-<name>" beside final
        model.save(tmp)                 # any writer, a file or a folder
    # now `final` is the new version; after an exception the old one is untouched and tmp is gone

Every writer in the toolkit (configs, history, checkpoints, models, exports, pictures, videos) goes
through `atomic_path`, so a process killed or failing at any moment leaves either the old file or the
new one. A file replaces the old one in one rename. A folder replaces the old one in one exchange of the
two names (Linux renameat2 with RENAME_EXCHANGE), after which the old version, now under the temporary
name, is deleted; where the file system cannot exchange, the old folder is renamed aside first and a
later write (or `recover`) puts it back if the process died between the two renames. A temporary carries
its writer's process id, so two writers never share one, and the next write into the same folder removes
the temporaries of writers that have died (kill -9 included). A full disk or a file-size limit becomes a
`UserError` that names the file; the earlier version stays in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
from pathlib import Path

from segkit.errors import UserError

TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
# Errors that mean "no room": a full disk, a quota, a file-size limit (RLIMIT_FSIZE).
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_TEMPORARY = re.compile(rf"^{re.escape(TMP_PREFIX)}(\d+)-")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def remove(path: Path) -> None:
    """Delete a file or a folder if it is there (a name the system cannot hold is not there)."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise


def temporary_name(final: Path, pid: int | None = None) -> Path:
    """Where `atomic_path` writes `final` first: `.tmp-<pid>-<name>` in the same folder (same file system,
    so the last step is a rename; the suffix is kept for writers that pick a format by it)."""
    return final.with_name(f"{TMP_PREFIX}{os.getpid() if pid is None else pid}-{final.name}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_dead_temporaries(folder: Path) -> list:
    """Delete the temporaries in `folder` whose writer has died; returns their paths."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            remove(entry)
            removed.append(entry)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one step (both must exist); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def recover(final) -> bool:
    """Put back a folder that a killed writer had renamed aside (`.old-<name>`) without moving the new one in
    (only where the file system cannot exchange two names); returns whether it did."""
    final = Path(final)
    old = final.with_name(_OLD_PREFIX + final.name)
    if old.exists() and not final.exists():
        old.rename(final)
        return True
    if old.exists():
        remove(old)  # the new folder is in place: the aside copy is what was replaced
    return False


def _no_space(exc: BaseException) -> bool:
    """True for an OSError of NO_SPACE, also when a library wrapped it (h5py, zipfile, TensorFlow)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        if any(word in str(exc) for word in ("No space left", "File too large", "Disk quota")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _about(exc: BaseException, paths) -> OSError | None:
    """The OSError in `exc` (or what it wraps) that names one of `paths` or a file inside one of them."""
    names = [str(p) for p in paths]
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            for filename in (exc.filename, exc.filename2):
                if filename is not None and any(str(filename) == n or str(filename).startswith(n + os.sep)
                                                for n in names):
                    return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _swap_in(tmp: Path, final: Path) -> None:
    """Move `tmp` to `final` in one step: a rename for a file, an exchange for a folder that replaces one."""
    if not (tmp.is_dir() and final.exists()):
        tmp.replace(final)
        return
    if _exchange(tmp, final):
        remove(tmp)  # the old version, now under the temporary name
        return
    old = final.with_name(_OLD_PREFIX + final.name)
    remove(old)
    final.rename(old)
    tmp.rename(final)  # a kill before this line leaves `old`, which `recover` puts back
    remove(old)


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path beside `final`; when the block ends without error, it becomes `final`.

    The temporary keeps `final`'s suffix (writers that choose a format by extension still work). On any
    exception it is deleted and the exception goes on, except that running out of space, and any other
    OSError about the file itself (no permission, a read-only disk, a name too long), become a UserError
    naming `final`.
    """
    final = Path(final)
    tmp = temporary_name(final)
    try:
        recover(final)
        remove_dead_temporaries(final.parent)
    except OSError:
        pass  # a folder that is not there yet, or not readable: the write below says so
    remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"the writer of {final} wrote nothing")
        _swap_in(tmp, final)
    except BaseException as exc:
        remove(tmp)
        if _no_space(exc):
            raise UserError(f"cannot write {final}: no space left (disk full or file-size limit); "
                            "the previous version, if any, is unchanged; free some space and run again") from None
        failed = _about(exc, (tmp, final))
        if failed is not None:
            raise UserError(f"cannot write {final}: {failed.strerror or failed}; the previous version, if any, "
                            "is unchanged") from None
        raise


def write_bytes(path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, payload) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_json(path, what: str = "file") -> dict:
    """The JSON object in `path`, or a UserError naming the file when it is missing, unreadable or corrupt."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {path} is not readable JSON ({type(exc).__name__}: {exc}); "
                        "restore it or start a new run") from None
    if not isinstance(value, dict):
        raise UserError(f"{what} {path} does not hold a JSON object")
    return value


def check_writable(path, flag: str, kind: str | None = None) -> Path:
    """Raise a UserError naming `flag` unless `path`, a file or folder to be written (maybe not there yet),
    can be created where it is. Scripts call it before any long work, so a bad --out fails at once.

    kind: "folder" (files are written inside it), "file" (written whole, through `atomic_path`), or None to
    go by what is there, else by the name (a suffix means a file). The check makes what is missing of the
    path and the temporary that `atomic_path` would write, then removes them: nothing is left behind, and
    a name the file system refuses (too long, in a read-only or virtual folder) is caught here.
    """
    if str(path) == "":
        raise UserError(f"{flag} is empty; give a {kind or 'file or folder'} name")
    path = Path(path)
    if kind not in (None, "file", "folder"):
        raise ValueError(f"kind must be None, 'file' or 'folder', got {kind!r}")
    try:
        exists, is_dir = path.exists(), path.is_dir()
        ancestor = path.parent  # the nearest folder that is there
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
    except OSError as exc:  # e.g. a name too long to look up
        raise UserError(f"{flag} {str(path)!r} is not a usable path ({exc.strerror or exc})") from None
    if kind is None:
        kind = "folder" if is_dir or (not exists and path.suffix == "") else "file"
    if exists and kind == "folder" and not is_dir:
        raise UserError(f"{flag} {str(path)!r} exists and is not a folder; give a folder")
    if exists and kind == "file" and is_dir:
        raise UserError(f"{flag} {str(path)!r} is a folder; give a file name")
    if not ancestor.is_dir():
        raise UserError(f"{flag} {str(path)!r} cannot be created: {ancestor} is a file, not a folder")
    made = []  # folders this check created, removed again at the end
    try:
        for folder in [p for p in reversed(path.parents) if not p.exists()]:
            folder.mkdir()
            made.append(folder)
        if kind == "folder" and not exists:
            path.mkdir()
            made.append(path)
        probe = temporary_name(path / "probe" if kind == "folder" else path)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {str(path)!r} cannot be written ({exc.strerror or exc}"
                        + (f": {exc.filename}" if exc.filename else "") + ")") from None
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def size_of(path) -> int:
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
