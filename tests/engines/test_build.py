"""`build_engines`: ONNX Runtime sets build from tiny bundles, match their ONNX stages, land in the manifest;
refusals and interrupted builds leave the bundle exactly as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trtbert import bundle as B
from trtbert.engines.base import Engine
from trtbert.engines.build import BuildOptions, build_engines, format_checks
from trtbert.engines.registry import create_engine
from trtbert.engines.validate import sample_tokens
from trtbert.errors import EngineError
from trtbert.describe import describe


@pytest.fixture
def bundle_copy(tiny_bundles: dict[str, Path], tmp_path: Path):
    """A private copy of a family's tiny bundle (builds change it)."""

    def copy(family: str) -> Path:
        dst = tmp_path / family
        shutil.copytree(tiny_bundles[family], dst)
        return dst

    return copy


def snapshot(root: Path) -> tuple[bytes, list[str]]:
    """The manifest's bytes and every path under the bundle (files and directories)."""
    return (root / B.MANIFEST).read_bytes(), sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("family", ["bert", "albert"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_build_matches_onnx_and_is_recorded(family: str, precision: str, bundle_copy) -> None:
    root = bundle_copy(family)
    result = build_engines(BuildOptions(bundle=root, precision=precision))
    name = f"ort-cpu-{precision}"
    assert result.name == name
    bundle = B.load_bundle(root, verify="full")  # every file, new and old, with its checksum
    stages = [s.name for s in bundle.manifest.stages]
    assert [c.stage for c in result.stages] == stages
    for check in result.stages:
        assert check.ok, format_checks(result.stages)
        assert check.max_diff <= (1e-4 + 1e-4 * check.scale if precision == "fp32" else 0.1)
    engine_set = bundle.engine_set(name)
    assert engine_set.backend == "ort" and engine_set.precision == precision
    assert engine_set.options["provider"] == "cpu" and engine_set.options["optimization"] == "disable"
    assert set(engine_set.versions) >= {"onnxruntime", "onnx", "trtbert"}
    assert set(engine_set.validation) == set(stages)
    for rel in set(engine_set.stage_files.values()):
        assert rel.startswith(f"engines/{name}/") and rel in bundle.manifest.files
    if family == "albert":  # one shared layer file, built once
        assert engine_set.stage_files["layer_01"] == engine_set.stage_files["layer_02"]
        assert len(list((root / "engines" / name).glob("*/layer_*"))) == 1  # one generation directory
    if precision == "int8":
        assert result.total_bytes < result.source_bytes
    assert name in describe(bundle)
    assert not [p for p in root.rglob(".*") if p.name != B.files.LOCK]  # no temporary left
    assert set(engine_set.costs) == set(engine_set.stage_files.values())  # measured resident cost per engine
    assert all(c["host"] > 0 for c in engine_set.costs.values())


def test_fp16_on_cpu_refused(bundle_copy) -> None:
    root = bundle_copy("bert")
    before = snapshot(root)
    with pytest.raises(EngineError, match="fp16 needs a GPU provider"):
        build_engines(BuildOptions(bundle=root, precision="fp16"))
    assert snapshot(root) == before


@pytest.mark.parametrize("options, message", [
    (dict(precision="int8", provider="cuda"), "int8 .* CPU provider only"),
    (dict(precision="fp16", backend="tensorrt"), r"tensorrt is not installed.*trtbert\[tensorrt\].*JetPack|"
                                                 r"JetPack.*trtbert\[tensorrt\]"),
    (dict(precision="int8", backend="tensorrt"), "int8 on TensorRT needs calibration data"),
    (dict(trt_cache=True), "--trt-cache is for --provider tensorrt"),
    (dict(name="../evil"), "not allowed"),
    (dict(name="onnx"), "not allowed"),
])
def test_bad_requests_refused(options: dict, message: str, bundle_copy) -> None:
    if options.get("precision") == "fp16" and options.get("backend") == "tensorrt" and _has_tensorrt():
        pytest.skip("tensorrt is installed: fp16 builds (tests/engines/test_tensorrt.py)")
    root = bundle_copy("bert")
    before = snapshot(root)
    with pytest.raises(EngineError, match=message):
        build_engines(BuildOptions(bundle=root, **options))
    assert snapshot(root) == before


def _has_tensorrt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def test_existing_set_needs_overwrite(bundle_copy) -> None:
    root = bundle_copy("bert")
    build_engines(BuildOptions(bundle=root, precision="int8"))
    before = snapshot(root)
    with pytest.raises(EngineError, match="already exists.*--overwrite"):
        build_engines(BuildOptions(bundle=root, precision="int8"))
    assert snapshot(root) == before
    again = build_engines(BuildOptions(bundle=root, precision="int8", overwrite=True, int8_weights="qint8"))
    bundle = B.load_bundle(root, verify="full")
    assert bundle.engine_set(again.name).options["int8_weights"] == "qint8"
    assert sorted(bundle.manifest.engine_sets) == ["ort-cpu-int8"]


def test_keyboard_interrupt_midway_leaves_bundle_unchanged(bundle_copy) -> None:
    root = bundle_copy("bert")
    build_engines(BuildOptions(bundle=root, precision="fp32"))  # an existing set must survive too
    before = snapshot(root)
    seen: list[str] = []

    def interrupt(stage: str) -> None:
        seen.append(stage)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_engines(BuildOptions(bundle=root, precision="int8"), on_stage=interrupt)
    assert seen == ["embeddings", "layer_01"]
    assert snapshot(root) == before
    B.load_bundle(root, verify="full")


def test_failure_midway_leaves_bundle_unchanged(bundle_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtbert.engines import ort_build

    root = bundle_copy("bert")
    before = snapshot(root)
    real = ort_build.quantize_int8
    calls = []

    def flaky(src: Path, dst: Path, weights: str = "quint8") -> None:
        calls.append(src.name)
        if len(calls) == 2:
            raise EngineError(f"cannot read {src.name}")  # e.g. an unreadable stage file
        real(src, dst, weights)

    monkeypatch.setattr(ort_build, "quantize_int8", flaky)
    with pytest.raises(EngineError, match="cannot read layer_01.onnx"):
        build_engines(BuildOptions(bundle=root, precision="int8"))
    assert snapshot(root) == before


def test_stage_beyond_tolerance_fails_the_build(bundle_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtbert.engines import build, validate

    root = bundle_copy("bert")
    before = snapshot(root)
    monkeypatch.setattr(build, "compare", lambda *a: validate.Comparison(max_diff=0.5, scale=1.0))
    with pytest.raises(EngineError, match="beyond tolerance") as info:
        build_engines(BuildOptions(bundle=root))
    assert "layer_02" in str(info.value) and "fail" in str(info.value)
    assert snapshot(root) == before


def test_int8_above_bound_warns_but_builds(bundle_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtbert.engines import build, validate

    root = bundle_copy("bert")
    monkeypatch.setattr(build, "compare", lambda *a: validate.Comparison(max_diff=5.0, scale=1.0))
    result = build_engines(BuildOptions(bundle=root, precision="int8"))
    assert [c.status for c in result.stages] == ["warn"] * 3
    assert len(result.warnings) == 3 and "trtbert eval" in result.warnings[0]
    assert B.load_bundle(root).engine_set("ort-cpu-int8").validation["layer_01"] == 5.0


def run_chain(bundle: B.Bundle, set_name: str, tokens: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every exit's logits, running the set's engines in stage order (word rows gathered as the runtime does)."""
    engine_set = bundle.engine_set(set_name)
    table = np.load(bundle.path(B.WORD_EMBEDDINGS), mmap_mode="r")
    engines: dict[str, Engine] = {}
    state, logits = None, {}
    for stage in bundle.manifest.stages:
        engine = engines.setdefault(engine_set.stage_files[stage.name], create_engine(bundle, engine_set, stage))
        engine.load()
        available = {**tokens, B.INPUTS_EMBEDS: np.ascontiguousarray(table[tokens[B.INPUT_IDS]]), B.HIDDEN: state}
        out = engine.infer({t.name: available[t.name] for t in stage.inputs})
        state = out.get(B.HIDDEN_OUT, out.get(B.HIDDEN, state))
        if B.LOGITS in out:
            logits[stage.name] = out[B.LOGITS]
    for engine in engines.values():
        engine.unload()
    return logits


def test_built_sets_run_through_the_engines_like_the_source(bundle_copy) -> None:
    root = bundle_copy("albert")
    for precision in ("fp32", "int8"):
        build_engines(BuildOptions(bundle=root, precision=precision))
    bundle = B.load_bundle(root)
    for tokens in sample_tokens(bundle.manifest.model, seed=7):
        reference = run_chain(bundle, "onnx", tokens)
        assert set(reference) == {"head_01", "head_02"}  # the tiny bundles have an exit after layer 1
        for name, tolerance in (("ort-cpu-fp32", 1e-4), ("ort-cpu-int8", 0.05)):
            got = run_chain(bundle, name, tokens)
            assert got.keys() == reference.keys()
            for key in reference:
                np.testing.assert_allclose(got[key], reference[key], atol=tolerance)
