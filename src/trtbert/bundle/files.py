"""Writing files safely: checksums, atomic writes that honour the umask, what ``--overwrite`` may
replace, temporary areas that a dead writer's successor cleans up, and the manifest lock.

Rules every writer follows:

- a file or directory appears complete or not at all (temporary name, fsync, rename);
- new files get the permissions the umask gives (``0666 & ~umask``, directories ``0777 & ~umask``),
  not ``mkstemp``'s 0600 / ``mkdtemp``'s 0700, so a service account can read a bundle;
- ``--overwrite`` replaces only what trtbert wrote (a bundle, a training checkpoint) or an empty
  directory, never a model being read nor a directory that contains it;
- temporary entries carry the writer's pid (``.<name>.trtbert-tmp-<pid>-<random>``); the next writer
  to the same place removes those whose process is gone;
- read-modify-write of a manifest happens under an exclusive ``flock`` on ``.trtbert.lock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from trtbert import faults
from trtbert.errors import BundleError, TrtbertError

log = logging.getLogger(__name__)

LOCK = ".trtbert.lock"
TMP_TAG = "trtbert-tmp"
_TMP = re.compile(rf"^\.(?P<name>.+)\.{TMP_TAG}-(?P<pid>\d+)-[0-9a-f]{{8}}$")
# Files that mark a directory as written by trtbert (a bundle, a training checkpoint).
MARKERS = ("manifest.json", "train_summary.json")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)  # pragma: no cover - non-Linux: a brief set-and-restore
    os.umask(current)
    return current


def file_mode() -> int:
    """Mode of a new regular file under the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of a new directory under the umask."""
    return 0o777 & ~umask()


def no_space(exc: OSError) -> bool:
    """Whether an OSError means the disk (or quota) is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def os_error(action: str, path: Path | str, exc: OSError) -> TrtbertError:
    """One line for a failed file operation (``action`` such as "write to"): where, why, and the fix
    when the disk is full."""
    if no_space(exc):
        return TrtbertError(f"no space left on the device to {action} {path}; free some disk space and retry")
    return TrtbertError(f"cannot {action} {path}: {exc.strerror or exc}")


def tmp_name(target: Path) -> Path:
    """A fresh temporary path beside ``target``, tagged with this process's pid."""
    return target.with_name(f".{target.name}.{TMP_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: Path, name: str | None = None) -> list[Path]:
    """Remove temporary entries in ``directory`` (of ``name`` only, if given) whose writer is gone."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TMP.match(entry.name)
        if not match or (name is not None and match["name"] != name) or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
        log.info("removed %s, left by a writer that is gone", entry)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see either the old or the new content, never a part."""
    path = Path(path)
    clean_stale(path.parent, path.name)
    tmp = tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise os_error("write", path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_dir(path: Path) -> Path:
    """``mkdir`` with the umask's permissions (``mkdtemp`` would make it 0700)."""
    path.mkdir(mode=dir_mode())
    return path


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_replaceable(target: Path, overwrite: bool, protect: Sequence[Path | str] = (),
                      markers: Sequence[str] = MARKERS) -> None:
    """Refuse to write ``target`` if that could destroy what trtbert did not write.

    ``target`` may be new, or (with ``overwrite``) an empty directory or one holding a trtbert
    marker file. It may never be, or contain, one of ``protect`` (the model being read).
    """
    target = Path(target).expanduser()
    resolved = target.resolve()
    for item in protect:
        source = Path(item).expanduser().resolve()
        if resolved == source or _inside(source, resolved):
            raise TrtbertError(
                f"{target} {'is' if resolved == source else 'contains'} the model being read ({item}); "
                "choose another output directory"
            )
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise TrtbertError(f"{target} already exists; pass --overwrite to replace it or choose another output")
    if not target.is_dir() or target.is_symlink():
        raise TrtbertError(f"{target} exists and is not a directory trtbert wrote; --overwrite will not replace it")
    entries = [p.name for p in target.iterdir()]
    if entries and not any(m in entries and _is_marker(target / m) for m in markers):
        raise TrtbertError(
            f"{target} holds files trtbert did not write ({', '.join(sorted(entries)[:3])}"
            f"{', ...' if len(entries) > 3 else ''}); --overwrite replaces only a trtbert output or an empty "
            "directory: choose another output directory"
        )


def owning_output(path: Path) -> Path | None:
    """The trtbert output (bundle, checkpoint) that ``path`` lies inside, if any: writing a report there
    would change what its manifest or checksums describe."""
    for parent in Path(path).expanduser().resolve().parents:
        if any(_is_marker(parent / m) for m in MARKERS):
            return parent
    return None


def _is_marker(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and ("format_version" in data or "num_layers" in data)


def check_space(directory: Path, need_bytes: int) -> None:
    """Refuse to start a write that cannot fit in the free space of ``directory``."""
    free = shutil.disk_usage(directory).free
    if need_bytes and free < need_bytes:
        raise TrtbertError(f"not enough disk space in {directory}: {free / 2**20:.0f} MiB free, about "
                           f"{need_bytes / 2**20:.0f} MiB needed; free some space or write elsewhere")


def check_writable(target: Path, overwrite: bool = False, need_bytes: int = 0,
                   protect: Sequence[Path | str] = ()) -> None:
    """Fail early, before any heavy work, if ``target`` cannot be written (see :func:`check_replaceable`;
    no permission, no space)."""
    target = Path(target)
    check_replaceable(target, overwrite, protect)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tmp_name(parent / "probe")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise os_error("write to", parent, exc) from exc
    check_space(parent, need_bytes)


def apply_umask(root: Path) -> None:
    """Give every file and directory under ``root`` the permissions the umask gives new ones (libraries
    such as safetensors write 0600 files; ``mkdtemp`` makes 0700 directories)."""
    fmode, dmode = file_mode(), dir_mode()
    os.chmod(root, dmode)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, dmode if path.is_dir() else fmode)


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False, protect: Sequence[Path | str] = (),
                     label: str = "write") -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target``.

    On any error (or interrupt, SIGTERM included where the CLI turns it into one) the temporary
    directory is removed and ``target`` is left as it was. A kill -9 leaves a tagged temporary entry
    that the next writer of ``target`` removes. Replacing an old ``target`` renames it aside first
    (also tagged), so a kill between the two renames leaves the old copy, which the next writer of
    ``target`` puts back if ``target`` is missing.
    """
    target = Path(target)
    check_writable(target, overwrite, protect=protect)
    parent = target.parent
    restore_aside(target)
    clean_stale(parent, target.name)
    tmp = make_dir(tmp_name(target))
    try:
        yield tmp
        apply_umask(tmp)
        if target.exists():
            faults.point(f"{label}:mid-swap")  # with an atomic exchange there is no half-swapped instant
            if exchange(tmp, target):  # tmp now holds the old copy
                faults.point(f"{label}:after-swap")
                shutil.rmtree(tmp, ignore_errors=True)
            else:  # no renameat2 here: rename aside, then into place (restore_aside repairs a kill between)
                aside = tmp_name(target)
                os.replace(target, aside)
                os.replace(tmp, target)
                faults.point(f"{label}:after-swap")
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the OS or
    filesystem cannot, so the caller falls back to two renames."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def restore_aside(target: Path) -> None:
    """If ``target`` is missing but a dead writer renamed an old complete copy aside, put it back."""
    if target.exists():
        return
    for entry in sorted(target.parent.glob(f".{target.name}.{TMP_TAG}-*")):
        match = _TMP.match(entry.name)
        if match and not _alive(int(match["pid"])) and entry.is_dir() and any(
                (entry / m).is_file() for m in MARKERS):
            os.replace(entry, target)
            log.warning("restored %s from %s (a writer was killed while replacing it)", target, entry.name)
            return


@contextlib.contextmanager
def work_area(root: Path, work_dir: str = ".trtbert-tmp") -> Iterator[Path]:
    """A private temporary directory inside the bundle's one temporary area (``root/.trtbert-tmp``),
    removed on exit; entries of writers that died are removed first."""
    area = Path(root) / work_dir
    try:
        if not area.is_dir():
            make_dir(area)
    except FileExistsError:
        pass
    except OSError as exc:
        raise os_error("write to", root, exc) from exc
    clean_stale(area)
    path = make_dir(tmp_name(area / "work"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            area.rmdir()  # only if no other writer uses it


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (a bundle) for a read-modify-write of its manifest."""
    path = Path(directory) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as exc:
        raise os_error("lock", directory, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
