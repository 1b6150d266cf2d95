"""GLUE readers: every task's exact TSV format, the real files when present, and error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trtbert.data import SST2_SAMPLE, Example, get_task, load_split, read_tsv, split_path
from trtbert.errors import DataError

MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"

FILES = {
    ("CoLA", "dev"): 'gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n'
                     'gj04\t0\t*\tThe more "books I read, the less I understand.\n',
    ("SST-2", "dev"): "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
                      'unflinchingly " bleak and desperate \t0\n',
    ("MRPC", "dev"): "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                     "1\t1355540\t1355592\tHe said the foodservice pie business\tThe foodservice pie business\n"
                     "0\t2029631\t2029565\tMagnarelli said Racicot hated\tHis wife said he was\n",
    ("STS-B", "dev"): STSB_HEADER + "\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat"
                      "\tA man wearing a hard hat\t5.000\n1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone"
                      "\tA young child\tA child is riding\t4.750\n",
    ("QQP", "dev"): "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                    "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n"
                    "263843\t69383\t380476\tI want to pursue PhD\tI handle social media\t1\n",
    ("MNLI", "dev_matched"): MNLI_HEADER + "\n0\t63735\t63735n\tslate\t( ( The ...\t( ( ...\t(ROOT ...)\t(ROOT ...)"
                             "\tThe new rights are nice enough\tEveryone really likes the newest benefits \tneutral"
                             "\tentailment\tneutral\tneutral\tneutral\tneutral\n",
    ("MNLI", "dev_mismatched"): MNLI_HEADER + "\n0\t75290\t75290c\tletters\t( ...\t( ...\t(ROOT)\t(ROOT)"
                                "\tYour contribution helped\tYour contributions were of no help\tcontradiction"
                                "\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n",
    ("QNLI", "dev"): "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\tThe new constitution came into force."
                     "\tentailment\n1\tWhat is the first city?\tThe tributaries are the Ill.\tnot_entailment\n",
    ("RTE", "dev"): "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\tChristopher Reeve had an accident."
                    "\tnot_entailment\n",
    ("WNLI", "dev"): "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair.\tThe hair has to be "
                     "cleaned.\t1\n",
}


@pytest.fixture
def glue(tmp_path: Path) -> Path:
    for (folder, split), text in FILES.items():
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    return tmp_path


def test_cola_has_no_header_and_keeps_quotes(glue: Path) -> None:
    rows = load_split("CoLA", "dev", glue)
    assert rows == [
        Example("The sailors rode the breeze clear of the rocks.", None, 1, 1),
        Example('The more "books I read, the less I understand.', None, 0, 2),
    ]


def test_sst2_header_and_trailing_space(glue: Path) -> None:
    rows = load_split("sst-2", "dev", glue)
    assert rows[0] == Example("it 's a charming and often affecting journey . ", None, 1, 2)
    assert rows[1].text_a == 'unflinchingly " bleak and desperate ' and rows[1].label == 0


@pytest.mark.parametrize(
    ("task", "split", "expected"),
    [
        ("mrpc", "dev", Example("He said the foodservice pie business", "The foodservice pie business", 1, 2)),
        ("sts-b", "dev", Example("A man with a hard hat", "A man wearing a hard hat", 5.0, 2)),
        ("QQP", "dev", Example("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", 0, 2)),
        ("mnli", "dev", Example("The new rights are nice enough", "Everyone really likes the newest benefits ", 1, 2)),
        ("mnli", "dev_mismatched", Example("Your contribution helped", "Your contributions were of no help", 2, 2)),
        ("MNLI-MM", "dev", Example("Your contribution helped", "Your contributions were of no help", 2, 2)),
        ("qnli", "dev", Example("What came into force?", "The new constitution came into force.", 0, 2)),
        ("rte", "dev", Example("Dana Reeve died.", "Christopher Reeve had an accident.", 1, 2)),
        ("wnli", "dev", Example("The drain is clogged with hair.", "The hair has to be cleaned.", 1, 2)),
    ],
)
def test_pair_tasks(glue: Path, task: str, split: str, expected: Example) -> None:
    assert load_split(task, split, glue)[0] == expected


def test_limit(glue: Path) -> None:
    assert len(load_split("qnli", "dev", glue, limit=1)) == 1
    with pytest.raises(DataError, match="limit"):
        load_split("qnli", "dev", glue, limit=0)


def test_missing_file_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"MNLI/dev_matched\.tsv not found; expected the GLUE layout"):
        load_split("mnli", "dev", tmp_path)


def test_unknown_task_lists_tasks() -> None:
    with pytest.raises(DataError, match=r"unknown task 'sst3'; known tasks: cola, sst2, mrpc, stsb, qqp, mnli"):
        get_task("sst3")


def test_unknown_split(glue: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'test2'"):
        load_split("sst2", "test2", glue)
    with pytest.raises(DataError, match="only for MNLI"):
        load_split("sst2", "dev_matched", glue)


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\ngood \t1\nno label here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:3: expected 2 tab-separated fields, found 1"):
        read_tsv("sst2", path)


def test_label_outside_task(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("index\tquestion\tsentence\tlabel\n0\tq\ts\tmaybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:2: label 'maybe' is not a qnli label"):
        read_tsv("qnli", path)
    cola = tmp_path / "cola.tsv"
    cola.write_text("gj04\t1\t\tfine.\ngj04\t2\t\tbad label.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cola\.tsv:2: label '2'"):
        read_tsv("cola", cola)


def test_wrong_header(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("text\tlabel\nhi\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.tsv:1: header has no column 'sentence'"):
        read_tsv("sst2", path)


def test_no_data_dir_without_datasets_suggests_data_dir() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="--data-dir"):
            load_split("sst2", "dev")
    else:  # pragma: no cover - only where datasets is installed
        pytest.skip("datasets is installed")


def test_data_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, trtbert.data; trtbert.data.load_split; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_sample() -> None:
    rows = read_tsv("sst2", SST2_SAMPLE)
    assert len(rows) == 64 and {r.label for r in rows} == {0, 1}


def _real_glue() -> Path | None:
    candidates = [os.environ.get("TRTBERT_GLUE_DIR"),
                  Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


REAL_COUNTS = {("cola", "train"): 8551, ("cola", "dev"): 1043, ("sst2", "train"): 67349,
               ("sst2", "dev"): 872, ("qnli", "dev"): 5463}


@pytest.mark.parametrize(("task", "split"), list(REAL_COUNTS))
def test_real_glue_files(task: str, split: str) -> None:
    root = _real_glue()
    if root is None or not split_path(task, split, root).is_file():
        pytest.skip("real GLUE data not present (set TRTBERT_GLUE_DIR)")
    rows = load_split(task, split, root)
    assert len(rows) == REAL_COUNTS[(task, split)]
    assert all(r.text_a for r in rows)
