"""Helpers of the fault suite: CLI calls (in-process and real processes), the one-line error contract,
bit flips, file-tree snapshots, an inotify watch, peak RSS of a child process.

Hook contract assumed by some tests (see the report of issue 9): with ``TRTBERT_FAULT=<point>`` in
its environment a trtbert process kills itself with SIGKILL when it reaches ``<point>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

TEXT = "the movie was great and i loved it"
MANIFEST = "manifest.json"
SOURCE_SET = "onnx"  # the exported graphs, runnable as they are
INT8 = "ort-cpu-int8"  # the sets the session bundle is built with
STREAM = "ort-cpu-int8-stream"


def set_dir(name: str) -> str:
    """Relative directory of an engine set."""
    return f"engines/{name}"


def manifest_json(root: Path) -> dict[str, Any]:
    """The manifest of a bundle as plain JSON."""
    import json

    return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))


def engine_file(root: Path, set_name: str, stage: str) -> str:
    """Relative path of a stage's engine file in a set, as the manifest records it (sets may keep their
    files in a versioned subdirectory)."""
    return manifest_json(root)["engine_sets"][set_name]["stage_files"][stage]


def set_files(root: Path, set_name: str) -> list[str]:
    """Relative paths of every file the manifest lists under an engine set's directory."""
    return sorted(f for f in manifest_json(root)["files"] if f.startswith(set_dir(set_name) + "/"))


def unlisted_engine_files(root: Path) -> list[str]:
    """Files under ``engines/`` that the manifest does not list (left by a dead or replaced writer)."""
    listed = set(manifest_json(root)["files"])
    engines = Path(root) / "engines"
    found = (p.relative_to(root).as_posix() for p in engines.rglob("*") if p.is_file()) if engines.is_dir() else ()
    return sorted(f for f in found if f not in listed and "/trt_cache/" not in f)


def assert_bundle_verifies(root: Path, *sets: str) -> None:
    """The bundle loads with full verification (every listed file present with its sha256), ``trtbert
    inspect`` accepts it, and each of ``sets`` is recorded in its manifest."""
    from trtbert.bundle import load_bundle

    load_bundle(root, verify="full")
    shown = cli("inspect", root)
    assert shown.exit_code == 0 and shown.exception is None, f"inspect refused {root}: {shown.stderr!r}"
    recorded = manifest_json(root).get("engine_sets") or {}
    for name in sets:
        assert name in recorded, f"engine set {name!r} is not recorded in {root}/manifest.json"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import SENTENCES  # noqa: E402  (the tiny models' vocabulary holds their words)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under process umask ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def write_sst2(directory: Path, rows: int = 24, bom: bool = False) -> Path:
    """A tiny SST-2 in the GLUE layout: ``<directory>/SST-2/{train,dev}.tsv`` with a header line."""
    task = directory / "SST-2"
    task.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        lines = ["sentence\tlabel"] + [f"{SENTENCES[i % len(SENTENCES)]}\t{i % 2}" for i in range(rows)]
        text = "\n".join(lines) + "\n"
        (task / f"{split}.tsv").write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return directory


def fast_wordpiece(tokens: list[str], directory: Path) -> Path:
    """Save a fast WordPiece tokenizer holding exactly ``tokens`` (ids in list order) into ``directory``."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(tokens)}
    try:  # transformers 5 takes the vocabulary itself (it would ignore vocab_file and keep 5 tokens)
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    except TypeError:  # transformers 4
        (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
        tok = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True, model_max_length=64)
    assert len(tok) == len(tokens), f"tokenizer has {len(tok)} tokens, expected {len(tokens)}"
    tok.save_pretrained(str(directory))
    return directory


# --- running the CLI --------------------------------------------------------------------------------


def cli(*args: Any, input: str | bytes | None = None) -> Result:
    """``trtbert ARGS`` in this process through click's CliRunner (stderr kept apart)."""
    from trtbert.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a real ``python -m trtbert`` child: this process's, offline, plus ``extra``."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("TRTBERT_FAULT", None)
    env.update(extra)
    return env


def trtbert_cmd(*args: Any) -> list[Any]:
    return [sys.executable, "-m", "trtbert", *[a if isinstance(a, bytes) else str(a) for a in args]]


def spawn(*args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
    """Start ``python -m trtbert ARGS`` as a real process (its own process group)."""
    return subprocess.Popen(trtbert_cmd(*args), env=env or child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, **kwargs)


class Proc:
    """A finished child: return code, stdout and stderr as text."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self) -> str:
        return f"Proc(rc={self.returncode}, stdout={self.stdout[-600:]!r}, stderr={self.stderr[-1500:]!r})"


def run_cli(*args: Any, env: dict[str, str] | None = None, timeout: float = 120,
            input: bytes | None = None) -> Proc:
    """Run ``python -m trtbert ARGS`` to completion (killed, with its group, after ``timeout`` s)."""
    proc = subprocess.Popen(trtbert_cmd(*args), env=env or child_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        err += f"\n[fault suite: killed after {timeout} s]".encode()
    return Proc(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def finish(proc: subprocess.Popen, timeout: float = 60) -> Proc:
    """Wait for a spawned child (kill it after ``timeout``) and collect its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        err += f"\n[fault suite: killed after {timeout} s]".encode()
    return Proc(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def kill_when(proc: subprocess.Popen, predicate: Callable[[], Any], sig: int, timeout: float, what: str) -> Proc:
    """Wait until ``predicate`` finds what a running ``proc`` writes (``what``: e.g. "engine file"), send
    ``sig`` to its process group and return how it ended; the group is killed whatever happens."""
    try:
        hit = wait_for(predicate, timeout=timeout, interval=0.002, proc=proc)
        assert hit and proc.poll() is None, f"the command wrote no {what} before it ended: {finish(proc)!r}"
        kill_group(proc, sig)
        return finish(proc, timeout=60)
    finally:
        kill_group(proc)


# --- the error contract ---------------------------------------------------------------------------------


_BAR = re.compile(r"\d+%\|")  # a tqdm progress bar


def stderr_lines(stderr: str) -> list[str]:
    """Visible stderr lines: progress-bar redraws (``\\r``) collapsed, blank lines dropped."""
    lines = []
    for line in stderr.split("\n"):
        last = line.split("\r")[-1]
        if last.strip() and not _BAR.search(last):
            lines.append(last)
    return lines


_LOG_LINE = re.compile(r"^(?:(?:DEBUG|INFO|WARNING)\s|warning:)")


def _errors_of(stderr: str) -> list[str]:
    """The lines that are not log records or warnings (those may precede the error line)."""
    return [ln for ln in stderr_lines(stderr) if not _LOG_LINE.match(ln)]


def assert_one_line_error(result: Result | Proc, *patterns: str, absent: tuple[str, ...] = ()) -> str:
    """Exit status 1, exactly one line ``error: ...`` on stderr (warnings aside), no traceback, and
    the line matches every regex of ``patterns`` (case-insensitive) and none of ``absent``."""
    if isinstance(result, Result):
        code, stderr = result.exit_code, result.stderr
        exc = result.exception
        assert exc is None or isinstance(exc, SystemExit), (
            f"an exception escaped the CLI instead of a one-line error: {exc!r}\nstderr: {stderr!r}")
        where = f"stdout: {result.stdout[-600:]!r}\nstderr: {stderr[-1500:]!r}"
    else:
        code, stderr = result.returncode, result.stderr
        where = repr(result)
    assert "Traceback" not in stderr, f"traceback on a user/device fault:\n{stderr[-3000:]}"
    assert code == 1, f"exit status {code}, expected 1\n{where}"
    errors = _errors_of(stderr)
    assert len(errors) == 1 and errors[0].startswith("error: "), f"expected one 'error: ...' line\n{where}"
    line = errors[0]
    for pattern in patterns:
        assert re.search(pattern, line, re.IGNORECASE), f"error line does not match {pattern!r}: {line!r}"
    for pattern in absent:
        assert not re.search(pattern, line, re.IGNORECASE), f"error line should not match {pattern!r}: {line!r}"
    return line


def assert_ok(result: Result | Proc) -> None:
    if isinstance(result, Result):
        assert result.exit_code == 0 and result.exception is None, (
            f"exit {result.exit_code}, exception {result.exception!r}\nstdout: {result.stdout[-800:]!r}\n"
            f"stderr: {result.stderr[-2000:]!r}")
    else:
        assert result.returncode == 0, repr(result)


# --- files -----------------------------------------------------------------------------------------------


def flip_bit(path: Path, offset: int | None = None, bit: int = 0) -> int:
    """Flip one bit of ``path`` in place (the middle byte by default); returns the offset."""
    data = bytearray(Path(path).read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 1 << bit
    Path(path).write_bytes(bytes(data))
    return offset


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (directories as ``<dir>``)."""
    out: dict[str, str] = {}
    root = Path(root)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    """Files under ``root`` that look temporary: a hidden path component, ``*.tmp``, ``*-inferred.onnx``,
    ``*.old*`` (an empty directory left behind, or a ``*.lock`` file, is not counted)."""
    bad = []
    for path in Path(root).rglob("*"):
        if not path.is_file() or path.name.endswith(".lock"):  # a writers' lock file may stay
            continue
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if any(p.startswith(".") or p.endswith(".tmp") or ".old" in p for p in parts) or "-inferred" in path.name:
            bad.append(rel)
    return sorted(bad)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.01,
             proc: subprocess.Popen | None = None) -> Any:
    """Poll ``predicate`` until it is truthy (returned), ``timeout`` passes or ``proc`` exits (None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            return predicate() or None
        time.sleep(interval)
    return None


def new_files(root: Path, known: set[str], suffixes: tuple[str, ...]) -> Callable[[], list[str]]:
    """A predicate: files under ``root`` ending in ``suffixes`` that were not in ``known``."""
    def check() -> list[str]:
        found = []
        for dirpath, _, names in os.walk(root):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                if rel not in known and name.endswith(suffixes):
                    found.append(rel)
        return found
    return check


def all_files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names}


# --- inotify: what was created in a directory while something ran ---------------------------------------

_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80


@contextlib.contextmanager
def created_in(directory: Path) -> Iterator[list[str]]:
    """Collect the names created in (or moved into) ``directory`` during the ``with`` block."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 failed")
    names: list[str] = []
    try:
        wd = libc.inotify_add_watch(fd, str(directory).encode(), _IN_CREATE | _IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
        yield names
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            pos = 0
            while pos < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, pos)
                raw = data[pos + 16: pos + 16 + length].split(b"\0", 1)[0]
                names.append(raw.decode("utf-8", "replace"))
                pos += 16 + length
    finally:
        os.close(fd)


# --- memory of a child process -----------------------------------------------------------------------------


_RSS_LAUNCHER = """
import atexit, os, sys
def _report():
    with open("/proc/self/status", encoding="ascii") as fh:
        peak = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open(os.environ["FAULTS_PEAK_RSS_FILE"], "w") as out:
        out.write(peak)
atexit.register(_report)
from trtbert.cli import main
sys.argv[0] = "trtbert"
main()
"""


def peak_rss_mib(*args: Any, scratch: Path, timeout: float = 120) -> tuple[float, Proc]:
    """Run ``trtbert ARGS`` in a child; return the child's own peak RSS (MiB, its ``VmHWM`` at exit) and its
    result. (``wait4``'s ``ru_maxrss`` would report this big test process's peak, inherited by fork.)"""
    report = Path(scratch) / f"peak-rss-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", _RSS_LAUNCHER, *[str(a) for a in args]],
                            env=child_env(FAULTS_PEAK_RSS_FILE=str(report)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    result = finish(proc, timeout=timeout)
    assert report.is_file(), f"the child reported no peak RSS: {result!r}"
    return int(report.read_text()) / 1024, result


# --- a small tmpfs for full-disk faults ---------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``directory`` (root only); skips the test when it cannot."""
    import pytest

    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk fault ({done.stderr.strip() or 'not root?'}); "
                    "these faults need root or the TRTBERT_FAULT=enospc:<point> hook")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the file system of ``directory`` until at most ``leave`` bytes are free."""
    import shutil

    filler = directory / "filler"
    with open(filler, "ab") as fh:
        while True:
            free = shutil.disk_usage(directory).free
            if free <= leave:
                break
            try:
                fh.write(b"\0" * min(free - leave, 1 << 20))
                fh.flush()
            except OSError:
                break
