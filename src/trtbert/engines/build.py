"""``trtbert build``: turn a bundle's ONNX stages into an engine set, check it, measure it, record it.

One file per distinct stage file (ALBERT's shared layer is built once). The set is built in the
bundle's temporary area, every stage is checked against its ONNX stage on sample inputs, each
engine's resident cost is measured in a clean process (``engines/costs.py``), the set is moved to a
new generation directory ``engines/<name>/<generation>/`` and recorded by one atomic manifest write
under the bundle's lock; only then is the previous generation deleted. A kill at any instant leaves
the old or the new set complete and recorded; the next writer removes what a dead one left.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trtbert import __version__
from trtbert import bundle as B
from trtbert import faults
from trtbert.engines.base import Engine
from trtbert.engines.costs import measure_costs
from trtbert.engines.validate import INT8_WARN, TOLERANCES, compare, reference_samples
from trtbert.errors import EngineError

log = logging.getLogger(__name__)

BUILD_BACKENDS = ("ort", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
QUANTIZED = ("int8", "int4")  # checked against a warning bound, never failed
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BuildOptions:
    """What to build. ``max_seq_len`` defaults to the model's maximum positions (TensorRT profile)."""

    bundle: Path
    backend: str = "ort"
    provider: str = "cpu"  # ONNX Runtime provider: cpu, cuda, tensorrt
    precision: str = "fp32"
    name: str | None = None
    max_batch: int = 8
    max_seq_len: int | None = None
    workspace: int = 256 << 20
    trt_cache: bool = False
    int8_weights: str = "auto"  # qint8 (s8) where the CPU has VNNI, else quint8 (engines/quantize.py)
    stream: bool = False  # CPU: shared template sessions + per-stage weights files (engines/streamed.py)
    int8_mode: str = "static"  # static: calibrated activation scales (batch-independent); dynamic: per batch
    calibration_data: Path | None = None  # texts (one per line, or pairs) to calibrate static int8 on
    calibration_task: str | None = None  # else the first rows of this GLUE task's train split
    data_dir: Path | None = None  # GLUE directory for calibration_task
    calibration_limit: int = 256
    fuse: bool = True  # CPU: Attention / SkipLayerNormalization / BiasGelu fusions (engines/fuse.py)
    nbits_block: int = 32  # int4: weights per scale (32: batch-independent answers; 64 and 128 were not)
    nbits_accuracy: int = 4  # int4: MatMulNBits accuracy level (4: int8 compute)
    int8_per_channel: bool = True  # int8 weights: one scale per output channel (else one per tensor)
    nbits_attention: str = "none"  # int4: attention left unfused (none) or MultiHeadAttention (separate)
    overwrite: bool = False
    progress: bool = False


@dataclass(frozen=True)
class StageCheck:
    """One built stage: its file, size, and the max |diff| against its ONNX stage."""

    stage: str
    file: str
    nbytes: int
    max_diff: float
    scale: float  # largest |reference value|
    bound: float  # the allowed difference (fp32/fp16) or the warning bound (int8)
    status: str  # ok | warn (int8 above its bound) | fail

    @property
    def ok(self) -> bool:
        """Within the bound."""
        return self.status == "ok"


@dataclass(frozen=True)
class BuildResult:
    """What ``build_engines`` wrote and measured."""

    bundle: Path
    name: str
    backend: str
    precision: str
    stages: tuple[StageCheck, ...]
    total_bytes: int
    source_bytes: int
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)


class StageBuilder(Protocol):
    """A backend's builder: one stage file in, one engine file out."""

    backend: str
    suffix: str

    def check(self) -> None: ...
    def options(self) -> dict[str, Any]: ...
    def versions(self) -> dict[str, str]: ...
    def build(self, src: Path, dst: Path, stage: B.Stage) -> None: ...
    def engine(self, path: Path, stage: B.Stage) -> Engine: ...
    def close(self) -> None: ...


def default_set_name(options: BuildOptions) -> str:
    """``ort-cpu-fp32``, ``ort-cpu-int8``, ``ort-cuda-fp16``, ``trt-fp16`` ..."""
    if options.backend == "tensorrt":
        return f"trt-{options.precision}"
    dynamic = "-dynamic" if options.precision == "int8" and options.int8_mode == "dynamic" else ""
    return f"ort-{options.provider}-{options.precision}{dynamic}" + ("-stream" if options.stream else "")


def make_builder(options: BuildOptions, manifest: B.Manifest, rel_dir: str) -> StageBuilder:
    """The builder for ``options.backend``, refusing what it cannot do (one clear line)."""
    if options.backend not in BUILD_BACKENDS:
        raise EngineError(f"unknown backend {options.backend!r}; choose one of {', '.join(BUILD_BACKENDS)}")
    if options.precision not in PRECISIONS:
        raise EngineError(f"unknown precision {options.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if options.backend == "tensorrt":
        from trtbert.engines.tensorrt import TrtBuilder

        max_seq = options.max_seq_len or manifest.model.max_positions
        builder: StageBuilder = TrtBuilder(
            precision=options.precision, max_batch=options.max_batch, max_seq_len=max_seq,
            opt_batch=1, opt_seq_len=min(128, max_seq), workspace=options.workspace,
        )
    else:
        from trtbert.engines.ort_build import OrtBuilder

        if options.trt_cache and options.provider != "tensorrt":
            raise EngineError("--trt-cache is for --provider tensorrt (ONNX Runtime's TensorRT engine cache)")
        cache = f"{rel_dir}/{B.TRT_CACHE_DIR}" if options.trt_cache else None
        calibration = None
        if options.precision == "int8" and options.int8_mode == "static" and options.provider == "cpu":
            from trtbert.engines.calibrate import calibration_data

            calibration = calibration_data(options.calibration_data, options.calibration_task, options.data_dir,
                                           options.calibration_limit)
        builder = OrtBuilder(provider=options.provider, precision=options.precision,
                             int8_weights=options.int8_weights, trt_cache_dir=cache, int8_mode=options.int8_mode,
                             fuse=options.fuse, num_heads=manifest.model.num_heads,
                             hidden_size=manifest.model.hidden_size, bundle=options.bundle, calibration=calibration,
                             nbits_block=options.nbits_block, nbits_accuracy=options.nbits_accuracy,
                             per_channel=options.int8_per_channel, nbits_attention=options.nbits_attention)
        if options.stream:
            from trtbert.engines.streamed import StreamedBuilder

            builder = StreamedBuilder(builder)
    builder.check()
    return builder


def build_engines(options: BuildOptions, on_stage: Callable[[str], None] | None = None) -> BuildResult:
    """Build, check, measure and record one engine set of ``options.bundle``; ``on_stage(name)`` after
    each stage."""
    start = time.perf_counter()
    bundle = B.load_bundle(options.bundle, verify="none")
    manifest = bundle.manifest
    name = options.name or default_set_name(options)
    if not _NAME.match(name) or name == B.SOURCE_SET:
        raise EngineError(f"engine set name {name!r} is not allowed: use letters, digits, '.', '_' or '-' "
                          f"(and not {B.SOURCE_SET!r})")
    if name in manifest.engine_sets and not options.overwrite:
        raise EngineError(f"engine set {name!r} already exists in {bundle.root}; pass --overwrite to rebuild it "
                          "or --name to build another")
    rel_dir = B.set_dir(name, uuid.uuid4().hex[:8])
    builder = make_builder(options, manifest, rel_dir)
    try:
        bundle.verify(files=bundle.files_of_set(B.SOURCE_SET))  # source graphs present and intact
        by_file: dict[str, list[B.Stage]] = {}
        for stage in manifest.stages:
            by_file.setdefault(stage.file, []).append(stage)
        source = sum(manifest.files[f].size for f in by_file)
        B.check_space(bundle.root, 3 * source)  # the set, its intermediates, the optimiser's copies
        references = reference_samples(bundle)
        with B.work_area(bundle.root) as work:
            built = B.make_dir(work / "set")
            if options.trt_cache:
                B.make_dir(built / B.TRT_CACHE_DIR)
            checks, stage_files = _build_files(builder, bundle, by_file, references, built, rel_dir, options,
                                               on_stage)
            failures = [c for c in checks if c.status == "fail"]
            if failures:
                raise EngineError(f"{name}: {', '.join(c.stage for c in failures)} differ from the ONNX stages "
                                  f"beyond tolerance; max |diff| per stage:\n{format_checks(checks)}")
            builder.close()
            engine_set = B.EngineSet(
                name=name, backend=builder.backend, precision=options.precision, stage_files=stage_files,
                options=builder.options(),
                versions={"trtbert": __version__, "numpy": np.__version__, **builder.versions()},
                validation={c.stage: c.max_diff for c in checks}, directory=rel_dir,
            )
            entries = _file_entries(built, rel_dir)
            engine_set = dataclasses.replace(engine_set, files=tuple(entries))
            engine_set = measure_costs(bundle, engine_set, built)
            faults.point("build:before-move")
            _commit(bundle.root, engine_set, entries, built)
    except OSError as exc:
        if B.no_space(exc):
            raise B.os_error("write to", bundle.root, exc) from exc
        raise
    finally:
        builder.close()

    warnings = tuple(f"{c.stage}: {options.precision} max |diff| {c.max_diff:.3g} is above {c.bound:.3g}; check "
                     "the task metric (trtbert eval) before using this set" for c in checks if not c.ok)
    warnings += tuple(getattr(builder, "warnings", lambda: [])())
    for text in warnings:
        log.warning(text)
    total = sum(e.size for e in entries.values())
    seconds = time.perf_counter() - start
    log.info("built %s (%s %s) in %.1f s: %.1f MiB", name, builder.backend, options.precision, seconds,
             total / 2**20)
    return BuildResult(bundle=bundle.root, name=name, backend=builder.backend, precision=options.precision,
                       stages=tuple(checks), total_bytes=total, source_bytes=source, seconds=seconds,
                       warnings=warnings)


def _build_files(
    builder: StageBuilder,
    bundle: B.Bundle,
    by_file: dict[str, list[B.Stage]],
    references: dict[str, Any],
    out: Path,
    rel_dir: str,
    options: BuildOptions,
    on_stage: Callable[[str], None] | None,
) -> tuple[list[StageCheck], dict[str, str]]:
    """Build every distinct stage file into ``out`` and check each stage that uses it."""
    from tqdm import tqdm

    atol, rtol = TOLERANCES.get(options.precision, INT8_WARN)
    checks: list[StageCheck] = []
    stage_files: dict[str, str] = {}
    with tqdm(total=len(bundle.manifest.stages), desc=f"build {Path(rel_dir).parent.name}", unit="stage",
              disable=not options.progress, leave=False) as bar:
        for src, stages in by_file.items():
            dst = out / (Path(src).stem + builder.suffix)
            bar.set_postfix_str(stages[0].name)
            builder.build(bundle.path(src), dst, stages[0])
            faults.point("build:after-stage")
            rel = f"{rel_dir}/{dst.name}"
            for stage in stages:
                result = compare(builder.engine(dst, stage), stage, references[stage.name])
                status = "ok" if result.within(atol, rtol) else "warn" if options.precision in QUANTIZED else "fail"
                checks.append(StageCheck(stage.name, rel, dst.stat().st_size, result.max_diff, result.scale,
                                         atol + rtol * result.scale, status))
                stage_files[stage.name] = rel
                log.debug("%-10s %-28s max|diff| %.2e (bound %.2e)", stage.name, rel, result.max_diff,
                          atol + rtol * result.scale)
                bar.update(1)
                if on_stage is not None:
                    on_stage(stage.name)
    order = {s.name: i for i, s in enumerate(bundle.manifest.stages)}
    checks.sort(key=lambda c: order[c.stage])
    return checks, stage_files


def _file_entries(built: Path, rel_dir: str) -> dict[str, B.FileEntry]:
    """Sizes and checksums of every file the set reads, under their final paths (not the run-time cache)."""
    entries = {}
    for path in sorted(built.rglob("*")):
        rel = path.relative_to(built).as_posix()
        if path.is_file() and not rel.startswith(B.TRT_CACHE_DIR + "/"):
            final = f"{rel_dir}/{rel}"
            entries[final] = B.FileEntry(path=final, size=path.stat().st_size, sha256=B.sha256_file(path))
    return entries


def _commit(root: Path, engine_set: B.EngineSet, entries: dict[str, B.FileEntry], built: Path) -> None:
    """Under the bundle's lock: move the built set to its generation directory, record it in the
    manifest (the one atomic step), then delete what no recorded set references any more."""
    with B.locked(root):
        manifest = B.read_manifest(root)
        target = root / str(engine_set.directory)
        os.makedirs(target.parent, mode=B.files.dir_mode(), exist_ok=True)
        B.files.apply_umask(built)  # libraries write 0600 files (safetensors, mkstemp): the umask decides
        os.replace(built, target)
        faults.point("build:after-move")
        old = manifest.engine_sets.get(engine_set.name)
        stale = set() if old is None else set(old.stage_files.values()) | set(old.files)
        files = {k: v for k, v in manifest.files.items() if k not in stale} | entries
        sets = {**manifest.engine_sets, engine_set.name: engine_set}
        updated = dataclasses.replace(manifest, files=dict(sorted(files.items())), engine_sets=sets)
        B.write_manifest(root, updated)
        faults.point("build:after-manifest")
        remove_unreferenced(root, updated)


def remove_unreferenced(root: Path, manifest: B.Manifest) -> list[str]:
    """Delete what lies under ``engines/`` but no recorded set uses: previous generations, and sets
    whose build was killed after the move. Call with the bundle's lock held."""
    keep = {Path(f).parts[:3] for f in manifest.files if f.startswith(B.ENGINES_DIR + "/")}
    engines = root / B.ENGINES_DIR
    removed: list[str] = []
    if not engines.is_dir():
        return removed
    for set_path in sorted(engines.iterdir()):
        children = sorted(set_path.iterdir()) if set_path.is_dir() and not set_path.is_symlink() else [set_path]
        for child in children:
            rel = child.relative_to(root).parts
            if rel in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append("/".join(rel))
        if set_path.is_dir() and not any(set_path.iterdir()):
            set_path.rmdir()
    for rel in removed:
        log.info("removed %s: no engine set uses it", rel)
    return removed


def format_checks(checks: tuple[StageCheck, ...] | list[StageCheck]) -> str:
    """The per-stage table: stage, file, size, max |diff|, bound, verdict (columns as wide as their entries)."""
    sw = max([len("stage"), *(len(c.stage) for c in checks)])
    fw = max([len("file"), *(len(c.file) for c in checks)])
    lines = [f"{'stage':<{sw}} {'file':<{fw}} {'MiB':>7} {'max|diff|':>10} {'bound':>9}  check"]
    for c in checks:
        lines.append(f"{c.stage:<{sw}} {c.file:<{fw}} {c.nbytes / 2**20:>7.2f} {c.max_diff:>10.2e} {c.bound:>9.1e}  "
                     f"{c.status}")
    return "\n".join(lines)
