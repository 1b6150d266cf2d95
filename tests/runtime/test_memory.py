"""The memory cap is a bound measured from outside: peak RSS above the process baseline stays within
the plan's bound + activations + allocator slack; the cgroup limit is read (v1, v2, hybrid) and a
process in a cgroup too small for the set picks a cap instead of being OOM-killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from caps import costs, loading_costs
from conftest import TEXTS
from trtbert.memory import _cgroup_dirs, memory_limit

MiB = 2**20

PROBE = """
import json, sys
from trtbert import Runner
from trtbert.memory import current_rss, peak_rss, reset_peak_rss, release_freed_memory
from trtbert.runtime.runner import rss_bound
texts = json.loads(sys.argv[3])
cap = None if sys.argv[2] == "unlimited" else int(sys.argv[2])
with Runner.from_bundle(sys.argv[1], memory_cap=cap, exit="none", tune_allocator=True) as r:
    smallest = min(r.pool._engines.values(), key=lambda e: e.nbytes)
    smallest.load(); smallest.unload(); release_freed_memory()  # the backend itself is the baseline
    r.encoder.encode(texts)
    base = current_rss()
    reset_peak_rss()
    for _ in range(3):
        r.predict(texts, batch_size=4)
    s = r.stats()
    seq = int(r.encoder.encode(texts).input_ids.shape[1])
    print(json.dumps({"grow": peak_rss() - base, "bound": rss_bound(s.memory_cap or s.plan_bound, r.bundle.manifest.model, 4, seq, r.allocator_slack),
                      "peak_pool": s.peak_bytes, "cap": s.memory_cap, "plan": s.plan_bound,
                      "evictions": s.evictions}))
"""


@pytest.mark.slow
def test_peak_rss_stays_within_the_stated_bound_at_every_cap(wide_bundle: Path) -> None:
    per_stage, shared = costs(wide_bundle)
    largest, total = max(loading_costs(wide_bundle).values()), sum(per_stage.values()) + shared
    caps = [shared + largest + MiB, shared + 3 * largest, (shared + total) // 2 + largest, None]
    texts = [TEXTS[i % len(TEXTS)] for i in range(12)]
    for cap in caps:
        out = subprocess.run([sys.executable, "-c", PROBE, str(wide_bundle), "unlimited" if cap is None else str(cap),
                              json.dumps(texts)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        # the pool may keep streamed engines beyond the plan's need while they fit: the cap is the bound
        assert r["peak_pool"] <= (r["plan"] if cap is None else cap) and (cap is None or r["plan"] <= cap)
        assert r["grow"] <= r["bound"], f"cap {cap}: RSS grew {r['grow'] / MiB:.1f} MiB > bound {r['bound'] / MiB:.1f}"
        if cap == caps[0]:
            assert r["evictions"] > 0  # the smallest cap really streams


def _fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


def test_cgroup_v2_limit_is_read(tmp_path: Path) -> None:
    fs = tmp_path / "cg"
    (fs / "svc" / "job").mkdir(parents=True)
    (fs / "svc" / "job" / "memory.max").write_text("max\n")
    (fs / "svc" / "memory.max").write_text(f"{256 * MiB}\n")
    (fs / "svc" / "memory.current").write_text(f"{100 * MiB}\n")
    proc = _fake_proc(tmp_path, "0::/svc/job\n", f"30 1 0:26 / {fs} rw - cgroup2 cgroup2 rw\n")
    assert _cgroup_dirs(proc) == [("v2", fs / "svc" / "job", fs)]
    limit = memory_limit(proc)
    assert limit.bytes == 156 * MiB and "cgroup v2" in limit.source and limit.used == 100 * MiB


def test_cgroup_v1_in_a_hybrid_layout_is_read(tmp_path: Path) -> None:
    fs = tmp_path / "memory"
    (fs / "app").mkdir(parents=True)
    (fs / "app" / "memory.limit_in_bytes").write_text(f"{512 * MiB}\n")
    (fs / "app" / "memory.usage_in_bytes").write_text(f"{412 * MiB}\n")
    mountinfo = (f"35 31 0:32 / {fs} rw - cgroup cgroup rw,memory\n"
                 f"41 31 0:38 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n")
    proc = _fake_proc(tmp_path, "4:memory:/app\n0::/\n", mountinfo)
    limit = memory_limit(proc)
    assert limit.bytes == 100 * MiB and "cgroup v1" in limit.source


def test_no_cgroup_limit_means_available_memory(tmp_path: Path) -> None:
    import psutil

    proc = _fake_proc(tmp_path, "0::/\n", f"41 31 0:38 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    limit = memory_limit(proc)
    assert limit.source == "available memory"
    assert abs(limit.bytes - psutil.virtual_memory().available) < 512 * MiB


def _memory_cgroup() -> Path | None:
    """A fresh v1 memory cgroup directory we may write (root, a writable cgroupfs), else None."""
    for version, _, mount in _cgroup_dirs(Path("/proc/self")):
        if version != "v1" or not os.access(mount, os.W_OK):
            continue
        path = mount / f"trtbert-test-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(1 << 40))
        except OSError:
            continue
        return path
    return None


@pytest.mark.slow
def test_in_a_cgroup_too_small_for_the_set_run_picks_a_cap_instead_of_being_oom_killed(wide_bundle: Path) -> None:
    group = _memory_cgroup()
    if group is None:
        pytest.skip("no writable v1 memory cgroup here (needs root and a cgroupfs)")

    def in_group(limit: int, *args: str) -> subprocess.CompletedProcess:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        code = ("import os, sys, runpy; open(sys.argv[1], 'w').write(str(os.getpid())); "
                "sys.argv = ['trtbert', *sys.argv[2:]]; runpy.run_module('trtbert', run_name='__main__')")
        return subprocess.run([sys.executable, "-c", code, str(group / "cgroup.procs"), "run", str(wide_bundle),
                               "--stats", *args], capture_output=True, text=True, timeout=300)

    def max_usage() -> int:
        value = int((group / "memory.max_usage_in_bytes").read_text())
        (group / "memory.max_usage_in_bytes").write_text("0")
        return value

    try:
        per_stage, shared = costs(wide_bundle)
        smallest_cap = shared + max(loading_costs(wide_bundle).values()) + MiB
        assert in_group(1 << 40, "--memory-cap", str(smallest_cap), *TEXTS).returncode == 0
        least = max_usage()  # the process with as few engines as can run
        full = in_group(1 << 40, "--memory-cap", "unlimited", *TEXTS)
        assert full.returncode == 0, full.stderr
        needed = max_usage()  # every engine resident
        outcomes = []
        for share in (0.1, 0.35, 0.6, 0.85, 1.1):  # limits between the two
            limit = least + int(share * (needed - least)) + 16 * MiB
            auto = in_group(limit, *TEXTS)
            assert auto.returncode in (0, 1), f"limit {limit}: killed by signal {-auto.returncode}: {auto.stderr[-400:]}"
            if auto.returncode == 0:
                assert len(auto.stdout.splitlines()) == len(TEXTS)
                outcomes.append("capped" if "capping engines at" in auto.stderr else "fits")
            else:
                assert auto.stderr.count("error:") == 1 and "cgroup v1" in auto.stderr and "Traceback" not in auto.stderr
                outcomes.append("refused")
        assert "capped" in outcomes, outcomes
        bitten = in_group(least + 2 * MiB, "--memory-cap", "unlimited", *TEXTS)
        assert bitten.returncode == -9, "the cgroup limit is real: with no cap the same run is OOM-killed"
    finally:
        group.rmdir()
