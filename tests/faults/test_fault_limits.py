"""Issue 9, items 8 and 9: every number is validated up front (one line, exit 1, nothing written), and
one enormous input costs no more memory than a normal one."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from faultkit import (
    INT8,
    MANIFEST,
    SENTENCES,
    TEXT,
    assert_ok,
    assert_one_line_error,
    cli,
    created_in,
    peak_rss_mib,
    run_cli,
)


def test_run_threads_far_above_the_cores_is_refused(bundle: Path) -> None:
    """Item 8: ``run --threads 10000`` is refused at once, naming the limit (a small multiple of the cores)."""
    result = run_cli("run", bundle, TEXT, "--threads", "10000", timeout=20)
    line = assert_one_line_error(result, r"threads")
    words = [w for w in line.split() if "/" not in w]  # paths may hold digits
    numbers = {int(n) for n in re.findall(r"\d+", " ".join(words))}
    assert any(1 <= n <= 8 * (os.cpu_count() or 1) for n in numbers), f"no limit named: {line!r}"


def test_eval_threads_far_above_the_cores_is_refused(bundle: Path, glue_dir: Path) -> None:
    """Item 8: ``eval --threads 10000`` is refused like ``run``'s."""
    result = run_cli("eval", bundle, "--task", "sst2", "--data-dir", glue_dir, "--limit", "2", "--quiet",
                     "--threads", "10000", timeout=20)
    assert_one_line_error(result, r"threads")


def test_eval_negative_threads_is_refused(bundle: Path, glue_dir: Path) -> None:
    """Item 8: ``eval --threads -1`` is refused as ``run`` refuses it (one line, exit 1)."""
    result = cli("eval", bundle, "--task", "sst2", "--data-dir", glue_dir, "--limit", "2", "--quiet",
                 "--threads", "-1")
    assert_one_line_error(result, r"threads")


@pytest.mark.parametrize("cap", ["0", "0MiB", "0B"])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_zero_memory_cap_is_refused(bundle: Path, glue_dir: Path, command: str, cap: str) -> None:
    """Item 8: ``--memory-cap 0`` is refused like ``0MiB`` (it does not silently mean unlimited)."""
    if command == "run":
        result = cli("run", bundle, TEXT, "--memory-cap", cap)
    else:
        result = cli("eval", bundle, "--task", "sst2", "--data-dir", glue_dir, "--limit", "2", "--quiet",
                     "--memory-cap", cap)
    assert_one_line_error(result, r"memory.cap")


@pytest.mark.parametrize("args, field", [
    (["--calibration-limit", "0"], r"calibration.limit"),
    (["--calibration-limit", "-5"], r"calibration.limit"),
    (["--max-drop", "nan"], r"max.drop"),
    (["--max-drop", "-1"], r"max.drop"),
])
def test_bad_calibration_numbers_are_refused_and_manifest_unchanged(bundle_copy: Path, glue_dir: Path,
                                                                    args: list[str], field: str) -> None:
    """Item 8: ``--calibration-limit 0``/negative and ``--max-drop nan``/negative are refused up front; the
    manifest is not rewritten."""
    before = (bundle_copy / MANIFEST).read_bytes()
    result = cli("eval", bundle_copy, "--task", "sst2", "--data-dir", glue_dir, "--calibrate", "--limit", "4",
                 "--quiet", *args)
    assert_one_line_error(result, field)
    assert (bundle_copy / MANIFEST).read_bytes() == before


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_bad_export_tolerance_is_refused_before_any_work(model_dir: Path, tmp_path: Path, value: str) -> None:
    """Item 8: ``export --tolerance -1`` (or nan) is refused up front: one line, nothing written at all."""
    area = tmp_path / "area"
    area.mkdir()
    with created_in(area) as created:
        result = cli("export", "--model", model_dir, "--out", area / "b", "--tolerance", value)
    assert_one_line_error(result, r"tolerance")
    assert created == [], f"export started writing before refusing the tolerance: {created}"


def test_one_huge_line_stays_within_the_memory_of_a_normal_one(bundle: Path, tmp_path: Path) -> None:
    """Item 9: a line of a million words under a 16 MiB cap peaks within a small margin of a normal line's
    RSS (the text is cut before tokenising), and it is still answered."""
    words = " ".join(SENTENCES).split()
    normal, huge = tmp_path / "normal.tsv", tmp_path / "huge.tsv"
    normal.write_text(SENTENCES[0] + "\n", encoding="utf-8")
    huge.write_text(" ".join(words[i % len(words)] for i in range(1_000_000)) + "\n", encoding="utf-8")
    args = ("run", bundle, "--engines", INT8, "--memory-cap", "16MiB", "--file")
    base, first = peak_rss_mib(*args, normal, scratch=tmp_path)
    peak, second = peak_rss_mib(*args, huge, scratch=tmp_path)
    assert_ok(first)
    assert_ok(second)
    assert len(second.stdout.splitlines()) == 1
    assert peak <= base + 48, f"peak RSS {peak:.0f} MiB for one huge line vs {base:.0f} MiB for a normal one"
