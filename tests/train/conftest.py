"""Fixtures for training tests: a tiny SST-2 / STS-B in the GLUE layout whose labels a tiny model can learn."""

from __future__ import annotations

from pathlib import Path

import pytest

WORDS = ["the movie was great and i loved it", "a dull , boring film with no story",
         "what a wonderful day for a walk in the park", "i would not watch this again"]


def write_glue(root: Path) -> Path:
    """SST-2 and STS-B folders whose labels a tiny random model learns in a few steps.

    SST-2 label 1 rows repeat "great", label 0 rows repeat "boring" (both in the tiny vocabulary).
    """
    sst2 = root / "SST-2"
    sst2.mkdir(parents=True, exist_ok=True)
    rows = ["sentence\tlabel"] + [f"{'great ' * (2 + i % 5) if i % 2 else 'boring ' * (2 + i % 5)}\t{i % 2}"
                                   for i in range(36)]
    (sst2 / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (sst2 / "dev.tsv").write_text("\n".join(rows[:13]) + "\n", encoding="utf-8")
    stsb = root / "STS-B"
    stsb.mkdir(parents=True, exist_ok=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    pairs = [f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{(i % 4) * 1.5:.3f}"
             for i, (a, b) in enumerate(zip(WORDS * 6, WORDS[1:] * 6 + WORDS[:1] * 6))]
    (stsb / "train.tsv").write_text("\n".join([header] + pairs) + "\n", encoding="utf-8")
    (stsb / "dev.tsv").write_text("\n".join([header] + pairs[:8]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def glue_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GLUE directory with SST-2 and STS-B."""
    return write_glue(tmp_path_factory.mktemp("glue-tiny"))
