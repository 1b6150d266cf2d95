"""The runtime never imports torch (nor transformers): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from click.testing import CliRunner
from trtbert import Runner
from trtbert.cli import main

with Runner.from_bundle(sys.argv[1], exit="patience:1", memory_cap="1MiB") as runner:
    assert runner.predict(["the movie was great", "a dull film"], batch_size=2)[0].exit_layer >= 1
    runner.layer_logits(["the movie"])
result = CliRunner().invoke(main, ["run", sys.argv[1], "the movie", "--json"])
assert result.exit_code == 0, result.output
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print("heavy:", heavy)
"""


def test_run_imports_no_torch(rt_bundles: dict[str, Path]) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(rt_bundles["albert"])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout
