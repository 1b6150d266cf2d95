"""Issue 9, item 7: bundles, engine sets, reports and checkpoints are written with the process umask's
permissions (0755/0644 under umask 022), not 0700/0600, so that a service account can read them."""

from __future__ import annotations

import shutil
from pathlib import Path

from faultkit import assert_ok, cli, umask


def wrong_modes(root: Path, mask: int) -> list[str]:
    """Paths under ``root`` (itself included) whose mode is not 0777/0666 minus ``mask``."""
    bad = []
    for path in [root, *sorted(root.rglob("*"))]:
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        got = path.stat().st_mode & 0o777
        if got != want:
            bad.append(f"{path.relative_to(root.parent).as_posix()} {oct(got)} (want {oct(want)})")
    return bad


def test_bundle_and_engine_sets_honour_umask(bundle: Path) -> None:
    """Item 7: a bundle exported and built under umask 022 is 0755 (directories) / 0644 (files) throughout,
    manifest.json and the bundle directory included."""
    assert wrong_modes(bundle, 0o022) == []


def test_eval_json_report_honours_umask(bundle: Path, glue_dir: Path, tmp_path: Path) -> None:
    """Item 7: ``eval --json`` writes its report with the umask's permissions (0664 under umask 002)."""
    report = tmp_path / "report.json"
    with umask(0o002):
        assert_ok(cli("eval", bundle, "--task", "sst2", "--data-dir", glue_dir, "--limit", "4", "--quiet",
                      "--json", report))
    assert oct(report.stat().st_mode & 0o777) == "0o664"


def test_calibration_keeps_manifest_readable(bundle: Path, glue_dir: Path, tmp_path: Path) -> None:
    """Item 7: ``eval --calibrate`` rewrites manifest.json with the umask's permissions (0644 under 022)."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / "manifest.json").chmod(0o644)
    with umask(0o022):
        assert_ok(cli("eval", copy, "--task", "sst2", "--data-dir", glue_dir, "--calibrate", "--calibration-limit", "8",
                      "--limit", "8", "--quiet"))
    assert oct((copy / "manifest.json").stat().st_mode & 0o777) == "0o644"


def test_train_checkpoint_honours_umask(model_dir: Path, glue_dir: Path, tmp_path: Path) -> None:
    """Item 7: a checkpoint written by ``train`` under umask 022 is 0755/0644 throughout."""
    out = tmp_path / "ck"
    with umask(0o022):
        assert_ok(cli("train", "--model", model_dir, "--task", "sst2", "--data-dir", glue_dir, "--out", out,
                      "--limit", "4", "--eval-limit", "4", "--epochs", "1", "--batch-size", "4",
                      "--max-seq-len", "16"))
    assert wrong_modes(out, 0o022) == []
