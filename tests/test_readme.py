"""The README walks a newcomer from the two commands to every method's example: each `alignkit` command of its
"One example per method" block runs, as written, on the tiny model.

"As written" means the command line of the README with three substitutions and smoke-sized settings appended
(a later ``key=value`` wins): ``models/smollm2`` becomes ``models/tiny`` (``alignkit model smollm2`` itself runs
as written: it is the first step a newcomer takes), ``JUDGE_PATH`` becomes ``models/tiny``, and the judge URL
points at a local stand-in for an OpenAI-compatible server. The data files are the README's: ``sft.jsonl``,
``pairs.jsonl`` and ``prompts.jsonl`` as the docs' Getting started page writes them, and the real HH-RLHF and
GSM8K files of ``../shared/data`` (small stand-ins of the same format where a checkout has none beside it).
The module is marked slow: about twenty short runs.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.lm.test_rewards_http_judge import _between, _completion, serve
from tests.test_docs import prepare_workdir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# the data the README names by ../shared/data: beside the repository, else the workplace's copy
SHARED = next((d for d in (REPO.parent / "shared", Path("/work/shared")) if (d / "data").is_dir()), None)
NAMES = ("hh-rlhf-harmless-base-test.jsonl.gz", "gsm8k-train.jsonl")
ONLINE = ["max_steps=1", "prompts_per_step=2", "samples_per_prompt=2", "max_new_tokens=8"]
SMOKE = {  # the settings that make each command a smoke run (the rest is the README's)
    "sft": ["max_steps=2", "batch_size=4", "warmup_steps=0"],  # the preset warms up for 10 steps
    "reward": ["max_steps=2", "batch_size=4"],
    "dpo": ["max_steps=2", "batch_size=4"],
    "bon": ["n=2", "max_new_tokens=8", "batch_size=4"],
    "reinforce": ONLINE,
    "ppo": [*ONLINE, "update_epochs=1"],
    "trpo": ONLINE,
    "rlaif": ["max_steps=2", "batch_size=4", "max_new_tokens=8", "min_confidence=0.5"],  # a random judge is unsure
    "generate": ["max_new_tokens=8"],
    "model": [],
    "classic gridworld": [],
    "classic bandit": ["runs=20", "steps=50"],
    "classic gym": ["total_steps=1024"],
}


def provide_shared_data(target: Path) -> None:
    """The README's data files at ``target``: the real ones when the workplace has them, else small stand-ins
    with the same names and formats (HH-RLHF transcripts, GSM8K questions)."""
    target.mkdir(parents=True)
    if SHARED is not None and all((SHARED / "data" / n).is_file() for n in NAMES):
        for name in NAMES:
            (target / name).symlink_to(SHARED / "data" / name)
        return
    h, a = "\n\nHuman: ", "\n\nAssistant: "
    hh = [{"chosen": f"{h}Tell me about day {i}.{a}It was a kind day.", "rejected": f"{h}Tell me about day {i}.{a}No."}
          for i in range(16)]
    with gzip.open(target / NAMES[0], "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in hh)
    (target / NAMES[1]).write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": f"{i} + 2 = {i + 2}"
                                                                   f"\n#### {i + 2}"}) + "\n" for i in range(16)))


def longer_response_endpoint(request, stop):
    """A stand-in OpenAI-compatible judge with a rule it applies in either order: the longer response wins (0.9)."""
    text = request["messages"][-1]["content"]
    a, b = _between(text, "Response A:\n", "\n\nResponse B:"), _between(text, "Response B:\n", "\n\n")
    win, lose = ("A", "B") if len(a) >= len(b) else ("B", "A")
    return 200, _completion(win, [{"token": win, "logprob": math.log(0.9)}, {"token": lose, "logprob": math.log(0.1)}])


def readme_commands(text: str) -> list[str]:
    """The ``alignkit`` commands of the README's "One example per method" block, continuation lines joined."""
    start = text.index("One example per method")
    block = text[text.index("```bash", start) + len("```bash"): text.index("```", text.index("```bash", start) + 7)]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = [line.split("#", 1)[0].strip() for line in joined.splitlines()]
    return [c for c in commands if c.startswith("alignkit ")]


def command_name(argv: list[str]) -> str:
    return " ".join(argv[1:3]) if argv[1] == "classic" else argv[1]


def as_smoke_run(command: str, judge_url: str) -> list[str]:
    argv = shlex.split(command)
    name = command_name(argv)
    if name == "model":
        return argv
    argv = [a.replace("models/smollm2", "models/tiny").replace("JUDGE_PATH", "models/tiny") for a in argv]
    argv = [re.sub(r"^judge_url=.*", f"judge_url={judge_url}", a) for a in argv]
    return argv + SMOKE[name]


def test_every_readme_command_is_covered():
    commands = readme_commands((REPO / "README.md").read_text())
    names = {command_name(shlex.split(c)) for c in commands}
    assert names == set(SMOKE), f"README commands without smoke settings, or settings for none: {names ^ set(SMOKE)}"
    assert len(commands) >= 15


def test_every_readme_example_runs_on_the_tiny_model(tmp_path, monkeypatch, capsys):
    """The commands run in this process through ``alignkit.cli.main`` (what the console script calls), in a
    working directory prepared as the docs' Getting started page describes."""
    from alignkit.cli import main

    work = tmp_path / "repo"
    prepare_workdir(work)
    provide_shared_data(tmp_path / "shared" / "data")  # ../shared/data, as from the repository root
    monkeypatch.chdir(work)
    monkeypatch.setenv("JUDGE_KEY", "secret")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for proxy in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with serve(longer_response_endpoint) as (url, log):
        for command in readme_commands((REPO / "README.md").read_text()):
            argv = as_smoke_run(command, url)
            code = main(argv[1:])
            out = capsys.readouterr()
            assert code == 0, (f"README: {command}\nran as: {shlex.join(argv)}\n--- stdout ---\n{out.out[-3000:]}\n"
                               f"--- stderr ---\n{out.err[-3000:]}")
        assert log and all(headers.get("Authorization") == "Bearer secret" for _, headers, _ in log)
    for run in ("runs/sft", "runs/rm", "runs/dpo", "runs/rloo", "runs/grpo", "runs/ppo"):
        assert (work / run / "final").is_dir() and (work / run / "report.html").is_file(), run
    assert (work / "models" / "smollm2" / "model.safetensors").is_file()
    shutil.rmtree(work / "models" / "smollm2")  # 540 MB
