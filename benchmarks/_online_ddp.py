"""Child process for the online suite's data-parallel row; not meant to be run by hand.

Usage: ``[torchrun --standalone --nproc_per_node N -m] benchmarks._online_ddp 'JSON_ARGS'`` with
``{"method", "new_tokens", "steps", "out_dir", "result"}``. Builds the suite's trainer
(:func:`benchmarks.online.build_trainer`; under ``torchrun`` the trainer's accelerator joins the process
group, gloo on CPU), sets torch's threads (1 per process under ``torchrun``, else ``OMP_NUM_THREADS`` or 2),
takes one warm-up step, then ``steps`` timed steps. Rank 0 writes ``{"step_times_s": [...], ...}`` to
``result`` and prints it as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> None:
    import torch

    args = json.loads(argv[0])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    threads = 1 if "LOCAL_RANK" in os.environ else int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)

    from benchmarks.online import build_trainer

    trainer = build_trainer(args["method"], args["new_tokens"], args["out_dir"])
    trainer.train(stop_after=trainer.step + 1)  # warm-up: allocator, thread pools, process group
    times = []
    for _ in range(args["steps"]):
        start = time.perf_counter()
        trainer.train(stop_after=trainer.step + 1)  # the gathers keep the processes in step
        times.append(time.perf_counter() - start)
    if int(os.environ.get("RANK", "0")) == 0:
        out = {"step_times_s": times, "world_size": world, "threads_per_process": threads,
               "torch_threads": torch.get_num_threads(), "score": trainer.history[-1].get("score")}
        with open(args["result"], "w") as f:
            json.dump(out, f)
        print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
