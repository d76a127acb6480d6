"""Driver for tests that need a fresh process (resume) or several (torchrun data parallel).

python -m tests.train.run_sft OUT_JSON OUTPUT_DIR MAX_STEPS [--save-steps N] [--resume PATH] [--accum K]
    [--stop-after S] [--slow-writes SECONDS] [--max-micro-batch-tokens T]
Writes {"losses": [...], "params": {name: flat list}} (rank 0 only).
"""

import argparse
import json

import torch

from alignkit.data import load_rows, tokenize_sft
from alignkit.trainers import SFTConfig, SFTTrainer
from tests.train import tasks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("output_dir")
    ap.add_argument("max_steps", type=int)
    ap.add_argument("--save-steps", type=int, default=0)
    ap.add_argument("--resume", default="")
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--max-micro-batch-tokens", type=int, default=8192)
    ap.add_argument("--stop-after", type=int, default=None, help="simulate an interruption after this step")
    ap.add_argument("--slow-writes", type=float, default=0.0,
                    help="sleep this long before each fsync of a checkpoint or final file (widens the window in which "
                         "a kill lands mid-write)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.slow_writes:
        import time

        from alignkit.training import checkpoint

        fsync = checkpoint._fsync
        checkpoint._fsync = lambda path: (time.sleep(args.slow_writes), fsync(path))[1]
    tok = tasks.tokenizer()
    examples = tokenize_sft(load_rows(tasks.sft_rows(64), format="prompt_completion"), tok, max_length=32)
    cfg = SFTConfig(output_dir=args.output_dir, batch_size=8, grad_accum_steps=args.accum, max_steps=args.max_steps,
                    save_steps=args.save_steps, resume_from=args.resume, learning_rate=1e-2, warmup_steps=2,
                    lr_scheduler="cosine", max_micro_batch_tokens=args.max_micro_batch_tokens, progress=False,
                    tensorboard=False)
    trainer = SFTTrainer(cfg, tasks.model(tok), examples, tokenizer=tok)
    print("training", flush=True)
    history = trainer.train(stop_after=args.stop_after)
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        params = {k: v.detach().flatten().tolist() for k, v in model.named_parameters()}
        with open(args.out, "w") as f:
            json.dump({"losses": [h["loss"] for h in history], "params": params,
                       "world_size": trainer.world_size}, f)


if __name__ == "__main__":
    main()
