"""The documentation site (mkdocs.yml, docs/): a strict MkDocs build, and every runnable block executed.

A fenced block in docs/**/*.md is *runnable* when the line just before its opening fence is the HTML comment
``<!-- runnable -->`` (invisible on the site). ``bash`` blocks run with ``bash -e``, ``python`` blocks with
this interpreter. Each page gets a fresh working directory prepared as the docs' "Getting started" page
describes (``models/tiny``, an untrained reward model ``models/tiny-rm``, tiny ``sft.jsonl``, ``pairs.jsonl``,
``prompts.jsonl`` and ``gsm8k.jsonl`` files and a copy of the repository's ``configs/``); the page's blocks run
in order in that one directory, so a later block may use what an earlier one wrote. ``alignkit`` and
``python`` resolve to this interpreter's environment, and torch uses one thread (``OMP_NUM_THREADS=1`` unless
set).

The whole module is marked slow: the runnable blocks start about thirty short runs on the tiny model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKER = "<!-- runnable -->"
LANGUAGES = ("bash", "python")
METHOD_PAGES = sorted((DOCS / "methods").glob("*.md"))
FIGURE_LIMIT = 200 * 1024
BLOCK_TIMEOUT_S = 600


def runnable_blocks(text: str, where: str = "<text>") -> list[tuple[str, str, int]]:
    """``(language, code, line number of the opening fence)`` of every runnable block of a Markdown text.

    A marker not followed by a fenced block in one of :data:`LANGUAGES`, or a block that is never closed, is
    an error naming the line (a typo must not silently make a block untested).
    """
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != MARKER:
            i += 1
            continue
        if i + 1 >= len(lines):
            raise ValueError(f"{where}:{i + 1}: {MARKER} at the end of the file, with no block after it")
        opening = lines[i + 1].strip()
        m = re.fullmatch(r"(`{3,}|~{3,})\s*([\w+-]*).*", opening)
        if m is None:
            raise ValueError(f"{where}:{i + 2}: {MARKER} must be followed by a fenced block, got {opening!r}")
        fence, language = m.group(1), m.group(2)
        if language not in LANGUAGES:
            raise ValueError(f"{where}:{i + 2}: a runnable block must be one of {LANGUAGES}, got {language!r}")
        indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
        body = []
        j = i + 2
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        if j >= len(lines):
            raise ValueError(f"{where}:{i + 2}: runnable block never closed")
        blocks.append((language, "\n".join(body) + "\n", i + 2))
        i = j + 1
    return blocks


def pages_with_blocks() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if MARKER in p.read_text())


def test_marker_parser():
    text = "intro\n<!-- runnable -->\n```bash\necho hi\n```\n\n```python\nnot runnable\n```\n" \
           "<!-- runnable -->\n```python\nprint(1)\n\nprint(2)\n```\n"
    assert runnable_blocks(text) == [("bash", "echo hi\n", 3), ("python", "print(1)\n\nprint(2)\n", 11)]
    with pytest.raises(ValueError, match="must be followed by a fenced block"):
        runnable_blocks("<!-- runnable -->\n\n```bash\necho\n```\n")
    with pytest.raises(ValueError, match="one of"):
        runnable_blocks("<!-- runnable -->\n```yaml\na: 1\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        runnable_blocks("<!-- runnable -->\n```bash\necho\n")


def test_every_method_page_has_a_runnable_block():
    assert METHOD_PAGES, "no pages under docs/methods/"
    missing = [p.name for p in METHOD_PAGES if not runnable_blocks(p.read_text(), str(p))]
    assert not missing, f"method pages without a runnable block: {missing}"


def test_figures_are_small_and_used():
    figures = sorted((DOCS / "figures").glob("*.png"))
    assert figures
    too_big = [f"{f.name}: {f.stat().st_size} bytes" for f in figures if f.stat().st_size > FIGURE_LIMIT]
    assert not too_big, f"figures over {FIGURE_LIMIT} bytes: {too_big}"
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    unused = [f.name for f in figures if f"figures/{f.name}" not in text]
    assert not unused, f"figures no page shows: {unused}"


def test_mkdocs_build_strict(tmp_path):
    """The site builds with no warning: every nav page exists, every link and anchor resolves, every API page
    renders from the docstrings."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "core" / "index.html").is_file()


# -- the working directory every page's blocks run in --------------------------------------------------------


def block_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    # the examples run a tiny model: one torch thread is as fast, and on a CPU shared with other jobs several
    # threads per process oversubscribe it (TRPO's double-backward step took 30-70 s instead of 1 s)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def prepare_workdir(root: Path) -> None:
    """models/tiny, models/tiny-rm, the four data files and configs/ (the docs' Getting started page)."""
    root.mkdir(parents=True, exist_ok=True)
    env = block_env()
    made = subprocess.run([sys.executable, "-m", "alignkit.cli", "model", "tiny", "output_dir=models/tiny"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    if made.returncode != 0:  # a checkout whose command line has no `model` command yet
        from alignkit.models.catalog import save_model

        save_model("tiny", root / "models" / "tiny")
    script = (
        "from alignkit.models import RewardModel, load_tokenizer\n"
        "tok = load_tokenizer('models/tiny')\n"
        "rm = RewardModel.from_causal_lm('models/tiny', pad_token_id=tok.pad_token_id)\n"
        "rm.save_pretrained('models/tiny-rm')\n"
        "tok.save_pretrained('models/tiny-rm')\n"
    )
    made = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    assert made.returncode == 0, made.stdout + made.stderr
    words = ["good", "kind", "bright", "warm", "bad", "cold", "dull", "sad"]
    write_jsonl(root / "sft.jsonl", [{"prompt": f"Describe day {i}:", "completion": f" a {words[i % 8]} day"}
                                     for i in range(16)])
    write_jsonl(root / "pairs.jsonl", [{"prompt": f"Describe day {i}:", "chosen": f" a {words[i % 4]} day",
                                        "rejected": f" a {words[4 + i % 4]} day"} for i in range(16)])
    write_jsonl(root / "prompts.jsonl", [{"prompt": f"Tell me about the {w} day:"} for w in words])
    sums = [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (4, 4), (6, 1), (9, 3)]
    write_jsonl(root / "gsm8k.jsonl", [{"question": f"What is {a} + {b}?",
                                        "answer": f"{a} + {b} = {a + b}\n#### {a + b}"} for a, b in sums])
    shutil.copytree(REPO / "configs", root / "configs")


@pytest.fixture(scope="module")
def workdir_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs-workdir") / "template"
    prepare_workdir(root)
    return root


@pytest.mark.parametrize("page", pages_with_blocks(), ids=lambda p: str(p.relative_to(DOCS)))
def test_runnable_blocks(page: Path, workdir_template: Path, tmp_path: Path):
    blocks = runnable_blocks(page.read_text(), str(page))
    work = tmp_path / "work"
    shutil.copytree(workdir_template, work)
    env = block_env()
    for language, code, line in blocks:
        if language == "bash":
            command = ["bash", "-e", "-c", code]
        else:
            script = tmp_path / f"block_{line}.py"
            script.write_text(code)
            command = [sys.executable, str(script)]
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert result.returncode == 0, (
            f"{page.relative_to(REPO)}:{line}: the {language} block exited with {result.returncode}\n"
            f"--- block ---\n{code}--- stdout (end) ---\n{result.stdout[-4000:]}\n"
            f"--- stderr (end) ---\n{result.stderr[-4000:]}")
