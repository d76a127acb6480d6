"""Device check: every trainer a few steps in bf16 (full and LoRA), FSDP on one process, and the generation
engine against ``model.generate``; one table at the end. Run through ``scripts/device_check.sh``.

    python scripts/device_check.py             # on CUDA (fails at once when torch sees no GPU)
    python scripts/device_check.py --dry-run   # the same sequence on CPU, smallest settings, no FSDP

Every trainer runs through the command line (``alignkit.cli.main``, in this process so the libraries are
imported once) on a tiny Llama and word-level tokenizer built and saved (``save_pretrained``) into a temp
dir, with data written there too; rewards and the RLAIF judge come from ``tests.train.tasks``. A run is ok
when the CLI exits 0, ``final/`` holds a loadable model, the last logged score / loss is finite, and (on
CUDA) the run allocated GPU memory. FSDP goes through ``accelerate launch --config_file`` (a config written
to the temp dir, ``distributed_type: FSDP``, one process) on this file's ``--one`` mode, which runs one CLI
command and prints the accelerator's distributed type and the peak GPU memory as a JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# trainer name -> (CLI command, its options beyond the shared ones)
ONLINE = {
    "rloo": ("reinforce", {"baseline": "loo"}),
    "grpo": ("reinforce", {"baseline": "grpo", "kl_penalty": "loss", "kl_estimator": "k3"}),
    "ppo": ("ppo", {}),
    "trpo": ("trpo", {}),
}
OFFLINE = {
    "sft": ("sft", "sft.jsonl", {}),
    "reward": ("reward", "pairs.jsonl", {}),
    "dpo": ("dpo", "pairs.jsonl", {}),
    "rlaif-rm": ("rlaif", None, {"judge": "tests.train.tasks:GoodWordJudge", "rlaif_method": "reward"}),
    "rlaif-dpo": ("rlaif", None, {"judge": "tests.train.tasks:GoodWordJudge", "rlaif_method": "dpo"}),
}
FSDP_TRAINERS = ("ppo", "rloo")
FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_processes: 1
num_machines: 1
machine_rank: 0
main_training_function: main
mixed_precision: 'no'
use_cpu: false
rdzv_backend: static
same_network: true
fsdp_config:
  fsdp_version: 1
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_sharding_strategy: FULL_SHARD
  fsdp_backward_prefetch: BACKWARD_PRE
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_use_orig_params: true
  fsdp_sync_module_states: true
  fsdp_cpu_ram_efficient_loading: false
  fsdp_offload_params: false
"""


def settings(dry_run: bool) -> dict:
    if dry_run:  # smallest: a couple of steps of a 2-layer model
        return {"model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
                "online_steps": 1, "offline_steps": 2, "new_tokens": 4, "gen_batch": 4, "gen_new_tokens": 16,
                "gen_repeats": 1, "report_tokens": 4,
                "extra": {"ppo": {"update_epochs": 1, "num_minibatches": 1}, "trpo": {"cg_iters": 3,
                                                                                      "max_backtracks": 3}}}
    return {"model": {"hidden_size": 256, "num_layers": 4, "num_heads": 4},
            "online_steps": 4, "offline_steps": 4, "new_tokens": 16, "gen_batch": 32, "gen_new_tokens": 128,
            "gen_repeats": 3, "report_tokens": 16, "extra": {}}


def build_assets(work: Path, model_kwargs: dict) -> Path:
    """Tokenizer + tiny Llama saved to ``work/model``, and sft / pairs / prompts files in ``work``."""
    from tests.train import tasks

    from alignkit.models.tiny import build_tiny_llama, build_tokenizer

    tok = build_tokenizer([" ".join(tasks.WORDS)] * 3, vocab_size=64, model="word")
    model = build_tiny_llama(seed=0, vocab_size=len(tok), max_position_embeddings=512, **model_kwargs)
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    files = {"sft.jsonl": tasks.sft_rows(32), "pairs.jsonl": tasks.preference_rows(32),
             "prompts.jsonl": [{"prompt": r["prompt"]} for r in tasks.sft_rows(32, seed=1)]}
    for name, rows in files.items():
        with (work / name).open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return work / "model"


def commands(work: Path, cfg: dict, mode: str) -> list[tuple[str, list[str], int]]:
    """``(trainer, CLI argv without output_dir, steps)`` for every trainer in ``mode`` (full / lora)."""
    common = [f"model={work / 'model'}", "mixed_precision=bf16", "progress=false", "tensorboard=false",
              "learning_rate=1e-4", f"lora={'true' if mode == 'lora' else 'false'}", "lora_r=8"]
    out = []
    for name, (cmd, opts) in ONLINE.items():
        args = {"prompts_file": work / "prompts.jsonl", "reward_fn": "tests.train.tasks:has_good",
                "max_steps": cfg["online_steps"], "prompts_per_step": 4, "samples_per_prompt": 2,
                "max_new_tokens": cfg["new_tokens"], "num_samples": 2, **opts, **cfg["extra"].get(name, {})}
        out.append((name, [cmd, *common, *(f"{k}={v}" for k, v in args.items())], cfg["online_steps"]))
    for name, (cmd, data, opts) in OFFLINE.items():
        args = {"batch_size": 4, "max_steps": cfg["offline_steps"], "max_length": 32, "num_samples": 2,
                "sample_max_new_tokens": cfg["report_tokens"], **opts}
        if data:
            args["train_file"] = work / data
        else:
            args.update({"prompts_file": work / "prompts.jsonl", "max_new_tokens": cfg["new_tokens"]})
        out.append((name, [cmd, *common, *(f"{k}={v}" for k, v in args.items())], cfg["offline_steps"]))
    return out


def final_value(run_dir: Path) -> tuple[str, float | None]:
    """The last logged score (online) or loss (offline) in ``metrics.jsonl``."""
    last: dict[str, float] = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for key in ("score", "loss"):
                if isinstance(row.get(key), (int, float)):
                    last[key] = float(row[key])
    for key in ("score", "loss"):
        if key in last:
            return key, last[key]
    return "-", None


def cuda_peak_mib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_cli(argv: list[str], log: Path) -> tuple[int, str]:
    """``alignkit.cli.main(argv)`` with its output to ``log``; ``(exit code, error text)``."""
    from alignkit.cli import main

    buf = io.StringIO()
    err = ""
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 - a failing trainer is a FAIL row, the check goes on
        rc, err = 1, traceback.format_exc()
    log.write_text(buf.getvalue() + err)
    if rc and not err:
        err = buf.getvalue()
    return int(rc or 0), err


def check_run(name: str, mode: str, steps: int, run_dir: Path, rc: int, seconds: float, gpu_mib: float | None,
              want_cuda: bool, err: str = "") -> dict:
    key, value = final_value(run_dir)
    problems = []
    if rc != 0:
        problems.append(f"exit {rc}")
    if not (run_dir / "final" / "config.json").is_file() and not (run_dir / "final" / "adapter_config.json").is_file():
        problems.append("no final/ model")
    if value is None or not math.isfinite(value):
        problems.append(f"final {key} {value}")
    if want_cuda and not gpu_mib:
        problems.append("no GPU memory allocated")
    return {"trainer": name, "mode": mode, "steps": steps, "seconds": seconds, "final": key, "value": value,
            "gpu_mib": gpu_mib, "ok": not problems, "problems": problems, "error": err[-3000:]}


def run_trainers(work: Path, cfg: dict, want_cuda: bool) -> list[dict]:
    import torch

    rows = []
    for mode in ("full", "lora"):
        for name, argv, steps in commands(work, cfg, mode):
            run_dir = work / "runs" / f"{name}-{mode}"
            if want_cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            rc, err = run_cli([*argv, f"output_dir={run_dir}"], work / f"{name}-{mode}.log")
            seconds = time.perf_counter() - start
            row = check_run(name, f"bf16 {mode}", steps, run_dir, rc, seconds, cuda_peak_mib() if want_cuda else None,
                            want_cuda, err)
            rows.append(row)
            verdict = "ok" if row["ok"] else "FAIL " + "; ".join(row["problems"])
            print(f"  {name:<10} bf16 {mode:<5} {seconds:6.1f} s  {verdict}", flush=True)
            if not row["ok"] and row["error"]:
                print("    " + row["error"][-1500:].replace("\n", "\n    "), flush=True)
    return rows


def run_fsdp(work: Path, cfg: dict) -> list[dict]:
    """Each of ``FSDP_TRAINERS`` under ``accelerate launch`` with an FSDP config, one process, on CUDA."""
    config = work / "fsdp_1proc.yaml"
    config.write_text(FSDP_CONFIG)
    accelerate = Path(sys.executable).parent / "accelerate"
    launcher = [str(accelerate)] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate.exists():
        launcher.append("launch")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    rows = []
    full = {name: (argv, steps) for name, argv, steps in commands(work, cfg, "full")}
    for name in FSDP_TRAINERS:
        argv, steps = full[name]
        run_dir = work / "runs" / f"{name}-fsdp"
        start = time.perf_counter()
        try:
            proc = subprocess.run([*launcher, "--config_file", str(config), "--main_process_port", "29561",
                                   str(Path(__file__).resolve()), "--one", *argv, f"output_dir={run_dir}"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, out = 124, f"timed out after {e.timeout} s"
        seconds = time.perf_counter() - start
        (work / f"{name}-fsdp.log").write_text(out)
        info = {}
        for line in out.splitlines():
            if line.startswith("DEVICE_CHECK "):
                info = json.loads(line[len("DEVICE_CHECK "):])
        row = check_run(name, "bf16 fsdp x1", steps, run_dir, rc, seconds, info.get("cuda_peak_mib"), True,
                        "" if rc == 0 else out)
        if info.get("distributed_type") != "FSDP":
            row["ok"] = False
            row["problems"].append(f"distributed_type {info.get('distributed_type')}")
        rows.append(row)
        verdict = "ok" if row["ok"] else "FAIL " + "; ".join(row["problems"])
        print(f"  {name:<10} fsdp x1    {seconds:6.1f} s  {verdict}", flush=True)
        if not row["ok"]:
            print("    " + out[-2500:].replace("\n", "\n    "), flush=True)
    return rows


def run_generation(work: Path, cfg: dict, device: str) -> list[dict]:
    """Tokens/s of ``KVCacheGenerator`` vs ``model.generate`` on the saved tiny model, bf16, same batch."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignkit.generation import KVCacheGenerator, SamplingParams

    rows = []
    try:
        model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.bfloat16).to(device).eval()
        batch, new = cfg["gen_batch"], cfg["gen_new_tokens"]
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(4, model.config.vocab_size, (16,), generator=g).tolist() for _ in range(batch)]
        ids = torch.tensor(prompts, device=device)
        mask = torch.ones_like(ids)
        engine = KVCacheGenerator(model, eos_token_id=2, pad_token_id=0)
        sampling = SamplingParams(max_new_tokens=new, min_new_tokens=new, seed=0)

        def alignkit_engine():
            return engine.generate(prompts, sampling).response_ids

        @torch.no_grad()
        def hf_generate():
            return model.generate(ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                  max_new_tokens=new, min_new_tokens=new, pad_token_id=0, eos_token_id=2)[:, 16:]

        for name, fn in (("generate:alignkit", alignkit_engine), ("generate:hf", hf_generate)):
            err, times, shape = "", [], None
            try:
                fn()  # warm-up (CUDA graphs / kernels / allocator)
                for _ in range(cfg["gen_repeats"]):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    out = fn()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                    shape = tuple(out.shape)
            except Exception:  # noqa: BLE001
                err = traceback.format_exc()
            seconds = sorted(times)[len(times) // 2] if times else None
            ok = not err and shape == (batch, new) and out.device.type == device
            rows.append({"trainer": name, "mode": f"bf16 {batch}x{new}", "steps": len(times), "seconds": seconds,
                         "final": "tok/s", "value": batch * new / seconds if seconds else None, "gpu_mib": None,
                         "ok": ok, "problems": [] if ok else [f"shape {shape}" if not err else "error"],
                         "error": err[-3000:]})
            if err:
                print("    " + err[-1500:].replace("\n", "\n    "), flush=True)
    except Exception:  # noqa: BLE001
        rows.append({"trainer": "generate", "mode": "bf16", "steps": 0, "seconds": None, "final": "-", "value": None,
                     "gpu_mib": None, "ok": False, "problems": ["error"], "error": traceback.format_exc()[-3000:]})
        print(rows[-1]["error"], flush=True)
    if len(rows) == 2 and rows[0]["value"] and rows[1]["value"]:
        rows.append({"trainer": "generate ratio", "mode": "alignkit / hf", "steps": "-", "seconds": None,
                     "final": "x", "value": rows[0]["value"] / rows[1]["value"], "gpu_mib": None, "ok": True,
                     "problems": [], "error": ""})
    return rows


def table(rows: list[dict]) -> str:
    head = ["trainer", "mode", "steps", "seconds", "final score/loss", "GPU MiB", "result"]

    def cell(r):
        value = "-" if r["value"] is None else f"{r['final']} {r['value']:.4g}"
        return [r["trainer"], r["mode"], str(r["steps"]), "-" if r["seconds"] is None else f"{r['seconds']:.1f}",
                value, "-" if r["gpu_mib"] is None else f"{r['gpu_mib']:.0f}",
                "ok" if r["ok"] else "FAIL (" + "; ".join(r["problems"]) + ")"]

    cells = [head] + [cell(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def one(argv: list[str]) -> int:
    """``--one COMMAND key=value ...``: one CLI run (under ``accelerate launch``), then a DEVICE_CHECK JSON line."""
    import torch

    from alignkit.cli import main

    rc = main(argv)
    from accelerate.state import PartialState

    state = PartialState()
    kind = state.distributed_type.value if hasattr(state.distributed_type, "value") else str(state.distributed_type)
    try:
        from accelerate.state import AcceleratorState

        kind = AcceleratorState().distributed_type.value
    except Exception:  # noqa: BLE001 - fall back to the partial state's view
        pass
    if state.is_main_process:
        print("DEVICE_CHECK " + json.dumps({"rc": rc, "distributed_type": kind, "device": str(state.device),
                                            "cuda_peak_mib": cuda_peak_mib(), "cuda": torch.cuda.is_available()}),
              flush=True)
    return rc


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        return one(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, smallest settings, no FSDP")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (runs and logs)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # tests.train.tasks (rewards, judge, data)

    import torch

    want_cuda = not args.dry_run
    if want_cuda and not torch.cuda.is_available():
        print("device_check: torch sees no CUDA device (use --dry-run for the CPU rehearsal)", file=sys.stderr)
        return 2
    device = "cuda" if want_cuda else "cpu"
    if want_cuda:
        print(f"cuda: {torch.cuda.get_device_name(0)} (torch.version.cuda {torch.version.cuda}, "
              f"bf16 supported {torch.cuda.is_bf16_supported()})")
    cfg = settings(args.dry_run)
    work = Path(tempfile.mkdtemp(prefix="alignkit-device-check-"))
    print(f"work dir: {work}  device: {device}  settings: {json.dumps(cfg)}", flush=True)
    start = time.perf_counter()
    build_assets(work, cfg["model"])
    rows = run_trainers(work, cfg, want_cuda)
    if want_cuda:
        rows += run_fsdp(work, cfg)
    else:
        print("  (dry run: FSDP skipped)")
    rows += run_generation(work, cfg, device)
    print(f"\n== device check ({'dry run, CPU' if args.dry_run else 'CUDA'}): {time.perf_counter() - start:.0f} s ==")
    print(table(rows))
    failed = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(failed)} ok, {len(failed)} FAIL; logs in {work}" if args.keep or failed else
          f"\n{len(rows) - len(failed)} ok, {len(failed)} FAIL")
    if not (args.keep or failed):
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
