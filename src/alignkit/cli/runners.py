"""What each command does with its parsed, validated config: ``run(name, config)`` for every entry of the command
table (:mod:`.commands`). Data files are read and validated before a model loads or anything is written."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import fields
from pathlib import Path

from .inputs import (
    check_max_length,
    check_prompt_truncation,
    check_prompts_fit_context,
    check_run_directory,
    judge,
    load_offline_rows,
    load_policy,
    load_prompt_rows,
    load_tokenizer_for,
    model_context,
    prompt_lengths,
    quiet_transformers,
    reward_source,
)
from .jobs import project
from .parser import UsageError

RESULT_FILES = ("final", "report.html", "metrics.jsonl", "completions.jsonl", "best_of_n.jsonl", "summary.json")


def results_summary(output_dir: str) -> str:
    """``results in DIR:`` and the result files present there (final model, report, metrics...)."""
    out = Path(output_dir)
    found = [f"  {out / name}{'/' if (out / name).is_dir() else ''}" for name in RESULT_FILES if (out / name).exists()]
    return "\n".join([f"results in {out}/:", *found])


def says_where_results_went(run):
    """After ``run(..., config)``, the main process prints where the results are (:func:`results_summary`)."""

    @functools.wraps(run)
    def wrapped(*args) -> None:
        run(*args)
        if int(os.environ.get("RANK", "0")) == 0:
            print(results_summary(args[-1].output_dir))

    return wrapped


def save_resolved(config) -> None:
    """``<output_dir>/resolved_config.yaml``: every option's value, the run's record of how it was made."""
    import yaml

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    (out / "resolved_config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def built(trainer_cls, *args, **kwargs):
    """The trainer, or a UsageError (exit 2, no traceback) when its constructor finds the settings and the data at
    odds (``warmup_steps`` beyond the run's steps, a column the method has no term for): a trainer raises those
    as ValueError before it writes anything."""
    try:
        return trainer_cls(*args, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None


@says_where_results_went
def run_offline(name: str, config) -> None:
    """``sft``, ``reward``, ``dpo``: tokenise the rows (cut to fit, counted), then train."""
    from ..data import tokenize_preferences, tokenize_sft
    from ..models import RewardModel
    from ..trainers import DPOTrainer, RewardTrainer, SFTTrainer

    check_run_directory(config)
    train_rows, eval_rows = load_offline_rows(config)
    tok = load_tokenizer_for(config)
    policy = load_policy(config, tok)
    check_max_length(config, model_context(policy))
    save_resolved(config)
    tokenize = tokenize_sft if name == "sft" else tokenize_preferences
    train = tokenize(train_rows, tok, **config.tokenize_kwargs())
    held_out = tokenize(eval_rows, tok, **config.tokenize_kwargs()) if eval_rows is not None else None
    if name == "reward":
        model, trainer_cls = RewardModel.from_causal_lm(policy, pad_token_id=tok.pad_token_id), RewardTrainer
    else:
        model, trainer_cls = policy, SFTTrainer if name == "sft" else DPOTrainer
    built(trainer_cls, config, model, train, held_out, tokenizer=tok).train()


def _load_online(config):
    """(tokenizer, policy, prompts, columns) of a job that samples from prompts."""
    check_run_directory(config)
    tok = load_tokenizer_for(config)
    rows, prompts, columns = load_prompt_rows(config, tok)
    lengths = prompt_lengths(tok, prompts, config)
    check_prompt_truncation(lengths, rows, config)  # before the model loads: errors in the data come first
    policy = load_policy(config, tok)
    check_prompts_fit_context(lengths, rows, config, model_context(policy))
    check_max_length(config, model_context(policy))  # rlaif trains on its samples too
    save_resolved(config)
    return tok, policy, prompts, columns


@says_where_results_went
def run_online(name: str, config) -> None:
    """``reinforce``, ``ppo``, ``trpo``: sample, score and update, step after step."""
    from ..trainers import PPOTrainer, ReinforceTrainer, TRPOTrainer

    tok, policy, prompts, columns = _load_online(config)
    reward = reward_source(config, tok)
    trainer_cls = {"reinforce": ReinforceTrainer, "ppo": PPOTrainer, "trpo": TRPOTrainer}[name]
    built(trainer_cls, config, policy, tok, prompts, reward, columns=columns).train()


@says_where_results_went
def run_bon(name: str, config) -> None:
    """Best-of-N: ``best_of_n.jsonl`` (the chosen completions as SFT rows), ``summary.json`` and the report."""
    from ..generation import make_generator
    from ..trainers import best_of_n
    from ..training.distributed import make_accelerator
    from ..training.report import append_samples, write_report

    tok, policy, prompts, columns = _load_online(config)
    reward = reward_source(config, tok)
    accelerator = make_accelerator()  # several processes: each samples and scores a share of the prompts
    engine = make_generator(policy.to(accelerator.device), tok)
    result = best_of_n(prompts, tok, engine, reward, config, columns=columns, rank=accelerator.process_index,
                       world_size=accelerator.num_processes)
    if accelerator.is_main_process:
        summary = result.summary()
        out = Path(config.output_dir)
        result.write_jsonl(out / "best_of_n.jsonl")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        append_samples(out, 0, result.to_sft_rows()[:8])
        write_report(out, title=f"alignkit bon: {out.resolve().name}", summary=summary)
    accelerator.wait_for_everyone()  # no process leaves (and tears the process group down) before the writes


@says_where_results_went
def run_rlaif(name: str, config) -> None:
    """Sample pairs, label them with the judge (ai_labels.jsonl), then train a reward model or DPO on them."""
    from ..generation import make_generator
    from ..models import RewardModel
    from ..trainers import DPOConfig, RewardConfig
    from ..trainers.rlaif import RLAIFConfig, label_pairs_with_judge, train_on_ai_labels
    from ..training.distributed import make_accelerator

    tok, policy, prompts, _ = _load_online(config)
    out = Path(config.output_dir)
    accelerator = make_accelerator()  # several processes: each samples and judges a share of the pairs
    engine = make_generator(policy.to(accelerator.device), tok)
    labels = label_pairs_with_judge(prompts, tok, engine, judge(config), project(config, RLAIFConfig),
                                    rank=accelerator.process_index, world_size=accelerator.num_processes)
    if accelerator.is_main_process:
        labels.write_jsonl(out / "ai_labels.jsonl")
        (out / "ai_labels_summary.json").write_text(json.dumps(labels.counts, indent=2))
        print(json.dumps(labels.counts, indent=2))
    if not labels.rows:
        raise UsageError(f"the judge kept none of the {labels.pairs_requested} pairs ({labels.dropped_low_confidence} "
                         f"judged with confidence at or below min_confidence={config.min_confidence}); there is "
                         "nothing to train on: lower min_confidence, or use a judge that tells the responses apart "
                         f"(the labels are in {out / 'ai_labels.jsonl'})")
    if config.rlaif_method == "reward":
        model = RewardModel.from_causal_lm(policy, pad_token_id=tok.pad_token_id)
        train_config = project(config, RewardConfig)
    else:
        model, train_config = policy, project(config, DPOConfig)
    trainer = train_on_ai_labels(labels, tok, model, config.rlaif_method, train_config, train=False)
    trainer.report_summary = {f"ai_labels/{k}": v for k, v in labels.counts.items()}  # shown in report.html
    trainer.train()


@says_where_results_went
def run_generate(name: str, config) -> None:
    """Write ``completions.jsonl`` ({prompt, completion, finished}) and print the first few."""
    from ..generation import make_generator
    from ..rollout import completion_rows, tokenize_prompts
    from ..training.report import append_samples, write_report

    tok, policy, prompts, _ = _load_online(config)
    ids, n_cut = tokenize_prompts(tok, prompts, **config.prompt_kwargs())
    if n_cut:
        print(f"{n_cut} of {len(prompts)} prompts were longer than max_prompt_length={config.max_prompt_length}: "
              "kept their last tokens")
    comp = make_generator(policy, tok).generate(ids, config.sampling())
    rows = completion_rows(tok, comp, prompts)
    path = Path(config.output_dir) / "completions.jsonl"
    with path.open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    for row in rows[:5]:
        print(f"{row['prompt']!r} -> {row['completion']!r}")
    append_samples(path.parent, 0, rows[:8])
    write_report(path.parent, title=f"alignkit generate: {path.parent.resolve().name}")


@says_where_results_went
def run_classic(load_runner, name: str, config) -> None:
    """``alignkit classic <sub>``: the runner (``load_runner()``) writes its PNGs and summary.json, then
    report.html."""
    from ..training.report import html_image, write_report

    save_resolved(config)
    summary = load_runner()(config)
    out = Path(config.output_dir)
    flat = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str, bool))}
    sections = [(png.stem.replace("_", " "), html_image(png.name, png.stem)) for png in sorted(out.glob("*.png"))]
    write_report(out, title=f"alignkit {name}: {out.resolve().name}", summary=flat, sections=sections)


def run_report(name: str, config) -> None:
    """``alignkit report RUN_DIR``: (re)write report.html of a run, e.g. one that was stopped early;
    ``alignkit report RUN_A RUN_B ... output_dir=DIR``: one page comparing them (the reward-KL frontier, shared
    axes)."""
    from ..training.compare import write_comparison
    from ..training.report import write_report

    dirs = config.run_dirs()
    try:
        print(write_report(Path(dirs[0])) if len(dirs) == 1 else write_comparison(dirs, config.output_dir))
    except ValueError as e:  # a corrupt metrics.jsonl line, named with its number
        raise UsageError(str(e)) from None


def run_quickstart(name: str, config) -> None:
    """``alignkit quickstart``: the built-in SFT -> reward model -> PPO / DPO pipeline."""
    from ..quickstart import run_quickstart as pipeline

    quiet_transformers()  # no "Writing model shards" bar after every stage
    pipeline(config)


def run_get_model(name: str, config) -> None:
    """``alignkit model smollm2|tiny``: save a model to start from (no Hugging Face Hub needed)."""
    from ..models.catalog import save_model

    try:
        path = save_model(config.name, config.output_dir)
    except ImportError as e:
        raise UsageError(str(e)) from None
    print(f"saved {config.name} to {path}/ (model + tokenizer); use it as model={path}")
