"""RLAIF, offline: an AI judge labels pairs of policy samples; a reward model or DPO learns from the labels.

Variant (seed 002 "RLAIF"; Lee et al. 2023, "RLAIF vs. RLHF: Scaling Reinforcement Learning from Human
Feedback with AI Feedback"; Bai et al. 2022, "Constitutional AI", the RL-CAI stage):
  1. sample: for each prompt, ``samples_per_prompt`` responses from the policy (any ``Generator``; temperature
     1 by default), paired disjointly: samples (0, 1), (2, 3), ... Each pair is drawn as its own n=2 sample
     of the prompt, which has the same distribution and lets one pair be redrawn alone;
  2. unusable pairs: two responses with the same text (or the same tokens once re-encoded, as the
     trainers will encode them), or a blank response (a preference row needs non-empty text), carry no
     preference. Such a pair is redrawn up to ``max_resamples`` times, then dropped and *counted*
     (``dropped_identical``, ``dropped_empty``), never dropped silently;
  3. label: ``p = judge.prefer(prompts, a, b)`` = P(a is better). For an :class:`alignkit.rewards.Judge` it
     is read from the label-token probabilities and asked in both orders to cancel position bias (Lee et
     al., "addressing position bias"); any object with that ``prefer`` method works (a rule, a human, an API);
  4. rows: ``chosen`` = the response the judge prefers, ``judge_prob`` = max(p, 1 - p), the judge's
     probability that ``chosen`` is better. A pair with ``judge_prob <= min_confidence`` is dropped and
     counted (``dropped_low_confidence``); the default 0.5 drops exactly the ties, where the judge states no
     preference and there is no chosen response;
  5. train: the rows go through ``alignkit.data.load_rows(format="preference")`` and
     ``tokenize_preferences`` into :class:`~alignkit.trainers.RewardTrainer` (then RL against that reward
     model: RLAIF proper) or :class:`~alignkit.trainers.DPOTrainer` (direct, no reward model).
Departure, named: Lee et al. and Bai et al. train the preference model on *soft* labels (cross-entropy
against the judge's distribution); here the trainers take hard chosen/rejected pairs, like human labels,
and the judge's probability is kept in the ``judge_prob`` column (filter with ``min_confidence``).

Online RLAIF (issue 5, item 5b) needs nothing from this file: a judge already is a
:class:`~alignkit.rewards.RewardFn`. ``judge`` itself scores one response (direct RLAIF, "d-RLAIF", of Lee et al.)
and ``judge.as_reward_fn(reference_column="reference")`` rewards P(completion beats the reference); pass
either to ``alignkit.rollout.collect_rollout`` or an online trainer as its reward function.

Usage::

    labels = label_pairs_with_judge(prompts, tokenizer, make_generator(policy, tokenizer), judge,
                                    RLAIFConfig(max_new_tokens=128))
    print(labels.counts)                       # pairs kept, dropped by reason, redraws, mean confidence
    labels.write_jsonl("ai_labels.jsonl")      # the preference dataset, reusable by any trainer
    trainer = train_on_ai_labels(labels, tokenizer, RewardModel.from_causal_lm(policy), "reward",
                                 RewardConfig(output_dir="runs/rm"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..generation.base import Generator, row_stream_seed
from ..rewards.judge import PairJudge
from ..rollout import sample_and_score, tokenize_prompts
from ..training import TrainConfig, option
from ..training.config import SamplingConfig, SeedConfig, check_options
from ..training.distributed import gather_objects, process_share
from .dpo import DPOConfig, DPOTrainer
from .reward_model import RewardConfig, RewardTrainer

__all__ = [
    "DROP_REASONS",
    "METHODS",
    "AILabels",
    "RLAIFConfig",
    "label_pairs_with_judge",
    "train_on_ai_labels",
]

DROP_REASONS = ("identical", "empty", "low_confidence")
"""Why a pair is not in :attr:`AILabels.rows`; each has its count in :attr:`AILabels.counts`."""

METHODS = ("reward", "dpo")


@dataclass
class RLAIFConfig(SeedConfig, SamplingConfig):
    """How pairs are sampled and labelled (sampling fields from ``SamplingConfig``; a pair's noise is keyed by
    (seed, draw, pair index)). Validated on construction (and again when used)."""

    samples_per_prompt: int = option(2, "responses sampled per prompt, paired disjointly (0-1, 2-3, ...): even, >= 2")
    max_resamples: int = option(2, "redraws of a pair whose responses are identical or blank, before it is "
                                   "dropped and counted")
    min_confidence: float = option(0.5, "keep a pair only if the judge's max(p, 1 - p) exceeds this (in [0.5, 1)); "
                                        "0.5 drops exact ties only")
    generation_batch_size: int = option(16, "pairs sampled per generate call (2 sequences each)")
    judge_batch_size: int = option(16, "pairs per judge.prefer call")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Fail at config time, naming the setting."""
        ints = {"samples_per_prompt": 2, "max_new_tokens": 1, "top_k": 0, "max_resamples": 0,
                "generation_batch_size": 1, "judge_batch_size": 1, "max_prompt_length": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.samples_per_prompt % 2:
            raise ValueError(f"samples_per_prompt must be even (samples are paired), got {self.samples_per_prompt}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not (isinstance(self.min_confidence, (int, float)) and 0.5 <= self.min_confidence < 1.0):
            raise ValueError(
                f"min_confidence must lie in [0.5, 1) (the judge's probability of the preferred response; 0.5 keeps "
                f"every pair but exact ties), got {self.min_confidence!r}"
            )
        check_options(self)  # prompt_truncation, chat_template
        self.sampling_params(2)  # min_new_tokens <= max_new_tokens, top_k >= 0, ...

    @property
    def pairs_per_prompt(self) -> int:
        return self.samples_per_prompt // 2


@dataclass
class AILabels:
    """The judge's labels: preference rows, and an account of every pair that did not become one.

    Attributes:
        rows: ``{"prompt", "chosen", "rejected", "judge_prob", "prompt_index"}`` per kept pair, in prompt
            order; ``judge_prob`` = the judge's P(chosen is better) > ``min_confidence``.
        dropped: ``{"prompt", "prompt_index", "response_a", "response_b", "reason", "judge_prob"}`` per
            dropped pair; ``reason`` in :data:`DROP_REASONS`; ``judge_prob`` = P(a is better), None when the
            pair never reached the judge.
        num_prompts: prompts given.
        pairs_requested: ``num_prompts * pairs_per_prompt`` = kept + dropped.
        resampled: pair redraws (a pair redrawn twice counts 2).
        stats: seconds spent generating and judging, sequences sampled, those cut at max_new_tokens.
    """

    rows: list[dict]
    dropped: list[dict]
    num_prompts: int
    pairs_requested: int
    resampled: int
    stats: dict[str, float] = field(default_factory=dict)

    def _dropped(self, reason: str) -> int:
        return sum(1 for d in self.dropped if d["reason"] == reason)

    @property
    def dropped_identical(self) -> int:
        return self._dropped("identical")

    @property
    def dropped_empty(self) -> int:
        return self._dropped("empty")

    @property
    def dropped_low_confidence(self) -> int:
        return self._dropped("low_confidence")

    @property
    def mean_confidence(self) -> float | None:
        """Mean ``judge_prob`` of the kept rows (None when none is kept: JSON has no NaN)."""
        return sum(r["judge_prob"] for r in self.rows) / len(self.rows) if self.rows else None

    @property
    def counts(self) -> dict[str, float | None]:
        """Everything a log needs: ``pairs`` kept, ``dropped_<reason>``, ``resampled``, ``mean_confidence``."""
        return {"prompts": self.num_prompts, "pairs_requested": self.pairs_requested, "pairs": len(self.rows),
                **{f"dropped_{r}": self._dropped(r) for r in DROP_REASONS}, "resampled": self.resampled,
                "mean_confidence": self.mean_confidence}

    def to_rows(self):
        """The rows validated as ``alignkit.data.Rows`` of format ``"preference"``."""
        from ..data import load_rows

        if not self.rows:
            raise ValueError(f"no labelled pair to train on: {self.counts}")
        return load_rows(self.rows, format="preference")

    def write_jsonl(self, path: str | Path) -> Path:
        """Write :attr:`rows` as JSON lines (readable by ``load_rows(path, format="preference")``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
        return path


# ------------------------------------------------------------------------------------------------ labelling
def _unusable(tokenizer, a: str, b: str) -> str | None:
    """Why the pair (a, b) can carry no preference, or None."""
    if not a.strip() or not b.strip():
        return "empty"
    if a == b:
        return "identical"
    enc_a, enc_b = tokenizer([a, b], add_special_tokens=False)["input_ids"]
    return "identical" if list(enc_a) == list(enc_b) else None  # what tokenize_preferences would see


def _judge(judge, prompts: list[str], a: list[str], b: list[str], prompt_index: list[int]) -> list[float]:
    """``judge.prefer`` checked: N finite probabilities in [0, 1]; errors name the pair's prompt index."""
    out = judge.prefer(prompts, a, b)
    p = torch.as_tensor(out.detach() if isinstance(out, torch.Tensor) else out).double().cpu()
    if p.shape != (len(prompts),):
        raise ValueError(f"judge.prefer returned shape {tuple(p.shape)} for {len(prompts)} pairs; expected "
                         f"({len(prompts)},) probabilities that response a is better")
    bad = ~(torch.isfinite(p) & (p >= 0) & (p <= 1))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"judge.prefer returned {float(p[i])} for the pair of prompt index {prompt_index[i]}; "
                         "expected a probability in [0, 1]")
    return p.tolist()


def label_pairs_with_judge(
    prompts: Sequence[str],
    tokenizer,
    generator: Generator,
    judge: PairJudge,
    config: RLAIFConfig | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> AILabels:
    """Sample pairs of responses per prompt, label each with ``judge``, return preference rows and counts.

    Args:
        prompts: prompt texts (as the policy is to see them, chat template applied).
        tokenizer: the policy's tokenizer (encodes prompts as :func:`alignkit.rollout.tokenize_prompts`
            does, decodes responses without special tokens).
        generator: any :class:`~alignkit.generation.Generator` over the policy.
        judge: any object with ``prefer(prompts, a, b) -> [N]`` P(a is better) (see :class:`PairJudge`).
        config: :class:`RLAIFConfig` (defaults: 2 samples, temperature 1).
        rank, world_size: this process and the number of processes (an initialised ``torch.distributed``
            group when > 1): each samples, redraws and judges a contiguous share of the pairs, and every process
            gets all the labels. A pair's noise is keyed by (seed, draw, pair index), so the labels depend
            neither on the batch sizes nor on the number of processes.
    Returns:
        :class:`AILabels`. ``len(rows) + len(dropped) == len(prompts) * pairs_per_prompt`` always.
    """
    config = config or RLAIFConfig()
    config.validate()
    if not callable(getattr(judge, "prefer", None)):
        raise TypeError(f"judge must have a prefer(prompts, responses_a, responses_b) method; got "
                        f"{type(judge).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    token_ids, n_cut = tokenize_prompts(tokenizer, prompts, **config.prompt_kwargs())
    slots = [i for i in range(len(prompts)) for _ in range(config.pairs_per_prompt)]  # slot -> prompt index
    mine = process_share(len(slots), rank, world_size)
    pairs: dict[int, tuple[str, str]] = {}  # slot -> its latest draw
    reasons: dict[int, str | None] = {}
    stats = {"time/generate_s": 0.0, "time/decode_s": 0.0, "time/judge_s": 0.0, "sequences": 0.0, "sequences_cut": 0.0}
    resampled = 0

    # 1-2. sample; redraw the pairs that carry no preference
    pending = list(mine)
    for draw in range(config.max_resamples + 1):
        if not pending:
            break
        resampled += len(pending) if draw else 0
        for start in range(0, len(pending), config.generation_batch_size):
            chunk = pending[start : start + config.generation_batch_size]
            sampling = config.sampling_params(2, seed=row_stream_seed(config.seed, draw, 0), prompt_keys=tuple(chunk))
            drawn = sample_and_score(generator, tokenizer, [token_ids[slots[s]] for s in chunk], sampling, prompts,
                                     rows=[slots[s] for s in chunk], stats=stats)
            stats["sequences"] += len(drawn.completions.finished)
            stats["sequences_cut"] += float((~drawn.completions.finished.bool()).sum())
            for k, s in enumerate(chunk):  # prompt-major: the pair of chunk[k] is texts[2k], texts[2k + 1]
                pairs[s] = a, b = drawn.texts[2 * k], drawn.texts[2 * k + 1]
                reasons[s] = _unusable(tokenizer, a, b)
        pending = [s for s in pending if reasons[s] is not None]

    # 3. label the usable pairs
    usable = [s for s in mine if reasons[s] is None]
    probs: dict[int, float] = {}
    t = time.perf_counter()
    for start in range(0, len(usable), config.judge_batch_size):
        chunk = usable[start : start + config.judge_batch_size]
        got = _judge(judge, [prompts[slots[s]] for s in chunk], [pairs[s][0] for s in chunk],
                     [pairs[s][1] for s in chunk], [slots[s] for s in chunk])
        probs.update(zip(chunk, got, strict=True))
    stats["time/judge_s"] = time.perf_counter() - t
    if world_size > 1:
        parts = gather_objects((pairs, reasons, probs, stats, resampled), world_size)
        pairs, reasons, probs = ({k: v for part in parts for k, v in part[j].items()} for j in range(3))
        stats = {key: (max if key.startswith("time/") else sum)(part[3][key] for part in parts) for key in stats}
        resampled = sum(part[4] for part in parts)
    stats["prompts_truncated"] = float(n_cut)  # every process tokenised all the prompts: not a share to sum

    # 4. rows, and an account of every pair that is not one
    rows, dropped = [], []
    for s, i in enumerate(slots):
        a, b = pairs[s]
        p = probs.get(s)
        reason = reasons[s]
        if reason is None and max(p, 1.0 - p) <= config.min_confidence:
            reason = "low_confidence"
        if reason is not None:
            dropped.append({"prompt": prompts[i], "prompt_index": i, "response_a": a, "response_b": b,
                            "reason": reason, "judge_prob": p})
            continue
        chosen, rejected = (a, b) if p > 0.5 else (b, a)
        rows.append({"prompt": prompts[i], "chosen": chosen, "rejected": rejected, "judge_prob": max(p, 1.0 - p),
                     "prompt_index": i})
    assert len(rows) + len(dropped) == len(slots)
    return AILabels(rows=rows, dropped=dropped, num_prompts=len(prompts), pairs_requested=len(slots),
                    resampled=resampled, stats=stats)


# ------------------------------------------------------------------------------------------------ training
def train_on_ai_labels(
    labels: AILabels,
    tokenizer,
    model,
    method: str = "reward",
    train_config: TrainConfig | None = None,
    eval_labels: AILabels | None = None,
    reference=None,
    train: bool = True,
):
    """Train a reward model (``method="reward"``) or a policy with DPO (``"dpo"``) on the judge's labels.

    A thin convenience: ``load_rows(rows, format="preference")`` -> ``tokenize_preferences`` (with the
    config's ``max_length`` and ``truncation``) -> :class:`RewardTrainer` / :class:`DPOTrainer`.

    Args:
        labels: from :func:`label_pairs_with_judge` (rows only are used).
        tokenizer: the tokenizer the model reads.
        model: an ``alignkit.models.RewardModel`` for ``"reward"`` (e.g. ``RewardModel.from_causal_lm(sft)``),
            the causal LM to align for ``"dpo"``.
        method: ``"reward"`` or ``"dpo"``.
        train_config: :class:`RewardConfig` / :class:`DPOConfig` (None: that class's defaults).
        eval_labels: held-out labels, evaluated at the end (and every ``eval_steps``).
        reference: DPO only: the reference model (None: a frozen copy of ``model``).
        train: False returns the trainer without training (to evaluate first, say).
    Returns:
        the trainer; ``trainer.history`` holds the per-step metrics once trained.
    """
    from ..data import tokenize_preferences

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    config_cls = RewardConfig if method == "reward" else DPOConfig
    train_config = config_cls() if train_config is None else train_config
    if not isinstance(train_config, config_cls):
        raise TypeError(f"method {method!r} takes a {config_cls.__name__}, got {type(train_config).__name__}")
    if method == "reward":
        from ..models import RewardModel

        if not isinstance(model, RewardModel):
            raise TypeError(f"method 'reward' trains an alignkit.models.RewardModel, got {type(model).__name__} "
                            "(build one with RewardModel.from_causal_lm(model, pad_token_id=...))")
        if reference is not None:
            raise ValueError("reference is for method 'dpo' only")

    def examples(ai: AILabels):
        return tokenize_preferences(ai.to_rows(), tokenizer, **train_config.tokenize_kwargs())

    train_examples = examples(labels)
    eval_examples = examples(eval_labels) if eval_labels is not None else None
    if method == "reward":
        trainer = RewardTrainer(train_config, model, train_examples, eval_examples, tokenizer=tokenizer)
    else:
        trainer = DPOTrainer(train_config, model, train_examples, eval_examples, tokenizer=tokenizer,
                             reference=reference)
    if train:
        trainer.train()
    return trainer

