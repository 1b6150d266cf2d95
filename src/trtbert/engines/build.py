"""``trtbert build``: turn a bundle's ONNX stages into an engine set, check it, record it in the manifest.

One file per distinct stage file (ALBERT's shared layer is built once) goes into
``engines/<name>/``. The set is built in a temporary directory under ``engines/``, every stage is
checked against its ONNX stage on sample inputs, the directory is renamed into place, and only then
is the manifest rewritten (atomically): an interrupted or failed build leaves the bundle as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trtbert import __version__
from trtbert import bundle as B
from trtbert.engines.base import Engine
from trtbert.engines.validate import INT8_WARN, TOLERANCES, compare, reference_samples
from trtbert.errors import EngineError

log = logging.getLogger(__name__)

BACKENDS = ("ort", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
TRT_CACHE_DIR = "trt_cache"  # ONNX Runtime's TensorRT engine cache, inside the set; written at run time
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
    int8_weights: str = "quint8"
    stream: bool = False  # CPU: shared template sessions + per-stage weights files (engines/streamed.py)
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
    return f"ort-{options.provider}-{options.precision}" + ("-stream" if options.stream else "")


def make_builder(options: BuildOptions, manifest: B.Manifest, name: str) -> StageBuilder:
    """The builder for ``options.backend``, refusing what it cannot do (one clear line)."""
    if options.backend not in BACKENDS:
        raise EngineError(f"unknown backend {options.backend!r}; choose one of {', '.join(BACKENDS)}")
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
        cache = f"{B.engine_dir(name)}/{TRT_CACHE_DIR}" if options.trt_cache else None
        builder = OrtBuilder(provider=options.provider, precision=options.precision,
                             int8_weights=options.int8_weights, trt_cache_dir=cache)
        if options.stream:
            from trtbert.engines.streamed import StreamedBuilder

            builder = StreamedBuilder(builder)
    builder.check()
    return builder


def build_engines(options: BuildOptions, on_stage: Callable[[str], None] | None = None) -> BuildResult:
    """Build, check and record one engine set of ``options.bundle``; ``on_stage(name)`` after each stage."""
    start = time.perf_counter()
    bundle = B.load_bundle(options.bundle, verify="none")
    manifest = bundle.manifest
    name = options.name or default_set_name(options)
    if not _NAME.match(name) or name == B.SOURCE_SET:
        raise EngineError(f"engine set name {name!r} is not allowed: use letters, digits, '.', '_' or '-' "
                          f"(and not {B.SOURCE_SET!r})")
    target = bundle.path(B.engine_dir(name))
    if (name in manifest.engine_sets or target.exists()) and not options.overwrite:
        raise EngineError(f"engine set {name!r} already exists in {bundle.root}; pass --overwrite to rebuild it "
                          "or --name to build another")
    builder = make_builder(options, manifest, name)
    bundle.verify(files=bundle.files_of_set(B.SOURCE_SET))  # source graphs present and intact
    references = reference_samples(bundle)
    by_file: dict[str, list[B.Stage]] = {}
    for stage in manifest.stages:
        by_file.setdefault(stage.file, []).append(stage)

    engines_root = bundle.path(B.ENGINES_DIR)
    made_root = not engines_root.exists()
    try:
        with B.atomic_directory(target, overwrite=True) as tmp:
            if options.trt_cache:
                (tmp / TRT_CACHE_DIR).mkdir()
            checks, stage_files = _build_files(builder, bundle, by_file, references, tmp, name, options, on_stage)
            failures = [c for c in checks if c.status == "fail"]
            if failures:
                raise EngineError(f"{name}: {', '.join(c.stage for c in failures)} differ from the ONNX stages "
                                  f"beyond tolerance; max |diff| per stage:\n{format_checks(checks)}")
            entries = _file_entries(tmp, B.engine_dir(name))
    except BaseException:
        if made_root:
            with contextlib.suppress(OSError):
                engines_root.rmdir()  # only if still empty
        raise
    finally:
        builder.close()

    warnings = tuple(f"{c.stage}: int8 max |diff| {c.max_diff:.3g} is above {c.bound:.3g}; check the task "
                     "metric (trtbert eval) before using this set" for c in checks if not c.ok)
    for text in warnings:
        log.warning(text)
    engine_set = B.EngineSet(
        name=name, backend=builder.backend, precision=options.precision, stage_files=stage_files,
        options=builder.options(),
        versions={"trtbert": __version__, "numpy": np.__version__, **builder.versions()},
        validation={c.stage: c.max_diff for c in checks},
    )
    _record(bundle.root, engine_set, entries)
    total = sum(e.size for e in entries.values())
    source = sum(manifest.files[f].size for f in by_file)
    seconds = time.perf_counter() - start
    log.debug("built %s (%s %s) in %.1f s: %.1f MiB", name, builder.backend, options.precision, seconds, total / 2**20)
    return BuildResult(bundle=bundle.root, name=name, backend=builder.backend, precision=options.precision,
                       stages=tuple(checks), total_bytes=total, source_bytes=source, seconds=seconds,
                       warnings=warnings)


def _build_files(
    builder: StageBuilder,
    bundle: B.Bundle,
    by_file: dict[str, list[B.Stage]],
    references: dict[str, Any],
    tmp: Path,
    name: str,
    options: BuildOptions,
    on_stage: Callable[[str], None] | None,
) -> tuple[list[StageCheck], dict[str, str]]:
    """Build every distinct stage file into ``tmp`` and check each stage that uses it."""
    from tqdm import tqdm

    atol, rtol = TOLERANCES.get(options.precision, INT8_WARN)
    checks: list[StageCheck] = []
    stage_files: dict[str, str] = {}
    with tqdm(total=len(bundle.manifest.stages), desc=f"build {name}", unit="stage",
              disable=not options.progress, leave=False) as bar:
        for src, stages in by_file.items():
            dst = tmp / (Path(src).stem + builder.suffix)
            bar.set_postfix_str(stages[0].name)
            builder.build(bundle.path(src), dst, stages[0])
            rel = f"{B.engine_dir(name)}/{dst.name}"
            for stage in stages:
                result = compare(builder.engine(dst, stage), stage, references[stage.name])
                status = "ok" if result.within(atol, rtol) else "warn" if options.precision == "int8" else "fail"
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


def _file_entries(tmp: Path, rel_dir: str) -> dict[str, B.FileEntry]:
    """Sizes and checksums of the set's files, under their final paths (the runtime cache is not listed)."""
    entries = {}
    for path in sorted(tmp.rglob("*")):
        rel = path.relative_to(tmp).as_posix()
        if path.is_file() and not rel.startswith(TRT_CACHE_DIR + "/"):
            final = f"{rel_dir}/{rel}"
            entries[final] = B.FileEntry(path=final, size=path.stat().st_size, sha256=B.sha256_file(path))
    return entries


def _record(root: Path, engine_set: B.EngineSet, entries: dict[str, B.FileEntry]) -> None:
    """Add the set to the manifest as it is now on disk (re-read, so a concurrent writer's change stays)."""
    manifest = B.load_bundle(root, verify="none").manifest
    prefix = B.engine_dir(engine_set.name) + "/"
    files = {k: v for k, v in manifest.files.items() if not k.startswith(prefix)} | entries
    sets = {**manifest.engine_sets, engine_set.name: engine_set}
    B.write_manifest(root, dataclasses.replace(manifest, files=dict(sorted(files.items())), engine_sets=sets))


def format_checks(checks: tuple[StageCheck, ...] | list[StageCheck]) -> str:
    """The per-stage table: stage, file, size, max |diff|, bound, verdict."""
    lines = [f"{'stage':<12} {'file':<34} {'MiB':>7} {'max|diff|':>10} {'bound':>9}  check"]
    for c in checks:
        lines.append(f"{c.stage:<12} {c.file:<34} {c.nbytes / 2**20:>7.2f} {c.max_diff:>10.2e} {c.bound:>9.1e}  "
                     f"{c.status}")
    return "\n".join(lines)
