"""Issue 9, item 4: a weights file changed or deleted while a long ``run --file``/``eval`` is going on is
detected on (re)load (size, mtime, inode at least): one line naming the file, exit 1; and ``run --file
... --json`` writes each answer as it is computed (JSON lines), so what was done before the stop is kept.

Real processes, under the smallest cap the streamed set accepts (the last layer is re-read for every input).
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from faultkit import (
    SENTENCES,
    STREAM,
    Proc,
    assert_one_line_error,
    engine_file,
    kill_group,
    spawn,
    wait_for,
    write_sst2,
)

ROWS = 3000


class Stream:
    """Collects a child's output stream on a thread, chunk by chunk, as it is written."""

    def __init__(self, stream) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream.fileno(),), daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        while chunk := os.read(fd, 1 << 16):
            with self._lock:
                self._data += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return self._data.decode("utf-8", "replace")

    @property
    def lines(self) -> list[str]:
        """Complete lines so far (without their newline)."""
        return self.text.split("\n")[:-1]

    def join(self) -> None:
        self._thread.join(timeout=30)


def _inputs(path: Path) -> list[str]:
    texts = [f"{SENTENCES[i % len(SENTENCES)]} w{i % 80}" for i in range(ROWS)]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts


def _change(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    else:  # one byte of the weights, in place: same size, same inode, new mtime
        with open(path, "r+b") as fh:
            fh.seek(path.stat().st_size - 100)
            byte = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("how", ["modify", "delete"])
def test_weights_changed_during_run_stops_and_keeps_answers(bundle_copy: Path, stream_cap: str, tmp_path: Path,
                                                            how: str) -> None:
    """Item 4: ``run --file big.tsv --json`` under a cap that forces reloads; a weights file is changed
    (or deleted) mid-run: exit 1 with one line naming it, and the JSON lines written before are kept."""
    texts = _inputs(tmp_path / "big.tsv")
    target = bundle_copy / engine_file(bundle_copy, STREAM, "layer_03")
    proc = spawn("run", bundle_copy, "--engines", STREAM, "--file", tmp_path / "big.tsv", "--json",
                 "--memory-cap", stream_cap, "--batch-size", "1", "--exit", "none")
    out, err = Stream(proc.stdout), Stream(proc.stderr)
    try:
        started = wait_for(lambda: len(out.lines) >= 20, timeout=60, proc=proc)
        if not started or proc.poll() is not None:
            kill_group(proc)
            proc.wait()
            out.join()
            pytest.fail(f"no answer was written while the run was going on (rc {proc.returncode}, "
                        f"{len(out.lines)} lines at the end): `run --file --json` must write each answer as "
                        "it is computed")
        written_before = len(out.lines)
        _change(target, how)
        _wait(proc)
    finally:
        kill_group(proc)
    out.join()
    err.join()
    result = Proc(proc.returncode, out.text, err.text)
    assert_one_line_error(result, r"layer_03\.weights")
    records = [json.loads(line) for line in out.lines]  # every line written is a whole JSON object
    assert len(records) >= written_before, "answers written before the change were lost"
    assert len(records) < ROWS, "the run went on to the end with a changed weights file"
    assert [r["text"] for r in records] == texts[:len(records)]


def _wait(proc) -> None:
    """Let the process end (it should stop by itself), killing its group if it does not in 2 minutes."""
    try:
        proc.wait(timeout=120)
    except Exception:
        kill_group(proc)
        proc.wait()


def test_weights_changed_during_eval_stops(bundle_copy: Path, stream_cap: str, tmp_path: Path) -> None:
    """Item 4: ``eval`` under a cap that forces reloads; a weights file changes mid-pass: one line naming
    it, exit 1 (not a report computed partly with other weights)."""
    data = write_sst2(tmp_path / "glue", rows=ROWS // 2)
    target = bundle_copy / engine_file(bundle_copy, STREAM, "layer_03")
    proc = spawn("eval", bundle_copy, "--task", "sst2", "--data-dir", data, "--engines", STREAM,
                 "--memory-cap", stream_cap, "--exit", "none")
    out, err = Stream(proc.stdout), Stream(proc.stderr)
    try:
        # a progress bar past its first rows shows that the engines are loaded and a pass is under way
        started = wait_for(lambda: re.search(r"\b[1-9]\d*/\d+\b", err.text), timeout=60, proc=proc)
        if not started or proc.poll() is not None:
            pytest.fail(f"eval finished or showed no progress before the change could be made (rc "
                        f"{proc.poll()}): {err.text[-1500:]!r}")
        _change(target, "modify")
        _wait(proc)
    finally:
        kill_group(proc)
    out.join()
    err.join()
    assert_one_line_error(Proc(proc.returncode, out.text, err.text), r"layer_03\.weights")
