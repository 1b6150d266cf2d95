"""The README's quickstart runs as written, against a bundle with the engine set it names."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's quickstart has no python block"
    return match.group(1)


@pytest.mark.slow
def test_quickstart_runs_as_written(tiny_bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    shutil.copytree(tiny_bundles["bert"], tmp_path / "bundle")
    build_engines(BuildOptions(bundle=tmp_path / "bundle", precision="int8", stream=True))
    monkeypatch.chdir(tmp_path)
    exec(compile(_quickstart(), str(README), "exec"), {})  # noqa: S102 - the README's own code
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2  # a text and a pair, mixed in one call
    for line in lines:
        label, *_ = line.split(" ", 1)
        assert label.startswith("LABEL_")
