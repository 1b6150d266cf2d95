"""Issue 9, items 5 and 6: kill -9 (and SIGTERM) at every step of ``export`` and ``build --overwrite``.

At every instant a kill leaves the old bundle/set or the new one, complete and recorded; temporaries of a
dead process are removed by the next writer; SIGTERM cleans up like Ctrl-C; nothing temporary ever
appears in the bundle's ``onnx/``, so two int8 builds of one bundle can run at once.

Two kinds of kill: real ones at real moments (a child is SIGKILLed when its first output file appears),
and, for the instants too short to hit from outside, the fault-injection hook this suite assumes:
with ``TRTBERT_FAULT=<point>`` in its environment a trtbert process sends itself SIGKILL when it
reaches ``<point>`` (points listed in BUILD_POINTS and EXPORT_POINTS).
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from faultkit import (
    INT8,
    STREAM,
    TEXT,
    all_files,
    assert_bundle_verifies,
    assert_ok,
    child_env,
    cli,
    created_in,
    finish,
    kill_when,
    leftovers,
    new_files,
    run_cli,
    set_files,
    spawn,
    unlisted_engine_files,
)

# build --overwrite of an existing set, in the order they are reached. A design without one of these
# steps fires the point at the nearest earlier moment; the first fires after the first stage's engine.
BUILD_POINTS = (
    "build:after-stage",     # one engine of the new set written (in the temporary area), the rest not yet
    "build:before-move",     # every engine of the new set written and checked, nothing of the old set touched
    "build:after-move",      # the new set's files in their final place, the manifest not yet rewritten
    "build:after-manifest",  # the manifest records the new set, the old set's files not yet removed
)
# export --overwrite of an existing bundle:
EXPORT_POINTS = (
    "export:after-stages",   # every stage file written and validated in the temporary area, no manifest yet
    "export:before-rename",  # the new bundle complete (manifest included) in the temporary area
    "export:mid-swap",       # the old bundle moved aside, the new one not yet in place
    "export:after-swap",     # the new bundle in place, the old bundle's copy not yet removed
)
OUTPUTS = (".onnx", ".weights", ".npy")


def assert_set_runs(root: Path, name: str) -> None:
    """The set is recorded, its files verify (``assert_bundle_verifies``) and ``run`` answers with it."""
    assert set_files(root, name), f"set {name} lists no files"
    assert_ok(cli("run", root, TEXT, "--engines", name))


def assert_clean(root: Path) -> None:
    """After a successful writer: no temporaries beside or in the bundle, nothing unlisted under engines/."""
    assert leftovers(root.parent) == [], "temporaries of a killed writer were left behind"
    assert unlisted_engine_files(root) == [], "engine files no recorded set uses were left behind"


def assert_killed_by_hook(proc, point: str) -> None:
    assert proc.returncode == -signal.SIGKILL, (
        f"TRTBERT_FAULT={point} was not reached (exit status {proc.returncode}): the fault-injection hook "
        f"is missing or the point was renamed\n{proc!r}")


@pytest.mark.parametrize("point", BUILD_POINTS)
def test_build_overwrite_killed_at_each_step(bundle_copy: Path, point: str) -> None:
    """Item 5: ``build --int8 --overwrite`` killed (-9) at each step leaves the old or the new set complete
    and recorded; the next build succeeds and leaves no temporaries (item 6)."""
    proc = run_cli("build", bundle_copy, "--int8", "--overwrite", env=child_env(TRTBERT_FAULT=point))
    assert_killed_by_hook(proc, point)
    assert_bundle_verifies(bundle_copy, INT8, STREAM)
    assert_set_runs(bundle_copy, INT8)
    assert_ok(cli("build", bundle_copy, "--int8", "--overwrite"))
    assert_bundle_verifies(bundle_copy, INT8, STREAM)
    assert_clean(bundle_copy)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_build_killed_while_building(bundle_copy: Path, sig: int) -> None:
    """Items 5 and 6: a real kill -9 / SIGTERM of ``build --int8 --stream --overwrite`` when its first engine
    file is being written: the old set still verifies and runs; after SIGTERM nothing temporary is left at once,
    after kill -9 the next writer removes the dead process's temporaries."""
    area = bundle_copy.parent
    known = all_files(area)
    fresh = new_files(area, known, OUTPUTS)
    proc = spawn("build", bundle_copy, "--int8", "--stream", "--overwrite")
    # an engine being written (not a scratch file beside the bundle's own onnx/ graphs)
    result = kill_when(proc, lambda: [f for f in fresh() if not f.startswith("bundle/onnx/")], sig, timeout=90,
                       what="engine file")
    assert result.returncode != 0, f"the build finished despite the signal: {result!r}"
    assert_bundle_verifies(bundle_copy, INT8, STREAM)
    assert_set_runs(bundle_copy, STREAM)
    if sig == signal.SIGTERM:
        assert leftovers(bundle_copy.parent) == [], "SIGTERM left temporaries behind (Ctrl-C would not)"
    assert_ok(cli("build", bundle_copy, "--int8", "--stream", "--overwrite"))
    assert_bundle_verifies(bundle_copy, INT8, STREAM)
    assert_clean(bundle_copy)


@pytest.mark.parametrize("point", EXPORT_POINTS)
def test_export_overwrite_killed_at_each_step(model_dir: Path, bundle: Path, tmp_path: Path, point: str) -> None:
    """Items 5 and 6: ``export --overwrite`` of an existing bundle killed (-9) at each step leaves the old
    or the new bundle complete (verifies in full); the next export succeeds and leaves no temporaries."""
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    proc = run_cli("export", "--model", model_dir, "--out", out, "--overwrite", env=child_env(TRTBERT_FAULT=point))
    assert_killed_by_hook(proc, point)
    assert_bundle_verifies(out)
    assert_ok(cli("export", "--model", model_dir, "--out", out, "--overwrite"))
    assert_bundle_verifies(out)
    assert leftovers(tmp_path) == [], "the next export did not remove the killed export's temporaries"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_export_killed_while_writing(model_dir: Path, tmp_path: Path, sig: int) -> None:
    """Item 6: a real kill -9 / SIGTERM of ``export`` when its first stage file appears leaves nothing that
    looks like a bundle; SIGTERM leaves no temporaries at all; after kill -9 the next export to the same
    place succeeds and removes the dead process's temporaries."""
    area = tmp_path / "exports"
    area.mkdir()
    out = area / "b"
    proc = spawn("export", "--model", model_dir, "--out", out)
    result = kill_when(proc, new_files(area, set(), OUTPUTS), sig, timeout=120, what="stage file")
    assert result.returncode != 0, f"the export finished despite the signal: {result!r}"
    assert not (out / "manifest.json").exists(), "an interrupted export left a manifest"
    if sig == signal.SIGTERM:
        left = sorted(p.relative_to(area).as_posix() for p in area.rglob("*") if p.is_file())
        assert left == [], f"SIGTERM left files behind (Ctrl-C would not): {left[:10]}"
    assert_ok(cli("export", "--model", model_dir, "--out", out, "--overwrite"))
    assert_bundle_verifies(out)
    assert leftovers(area) == [], "the next export did not remove the killed export's temporaries"
    holding = [p.name for p in area.iterdir() if p.is_file() or any(f.is_file() for f in p.rglob("*"))]
    assert holding == ["b"], f"beside the bundle: {holding}"


def test_concurrent_int8_builds_of_one_bundle(bundle_copy: Path) -> None:
    """Item 6: two int8 builds of one bundle at once both succeed and are both recorded; nothing temporary
    (``layer_NN-inferred.onnx``) is ever created in the bundle's ``onnx/``."""
    with created_in(bundle_copy / "onnx") as created:
        procs = [spawn("build", bundle_copy, "--int8", "--name", name) for name in ("int8-a", "int8-b")]
        results = [finish(p, timeout=240) for p in procs]
    for result in results:
        assert_ok(result)
    assert created == [], f"temporary files were created in the bundle's onnx/: {sorted(set(created))}"
    assert_bundle_verifies(bundle_copy, INT8, STREAM, "int8-a", "int8-b")
