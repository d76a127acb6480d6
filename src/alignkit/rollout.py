"""Rollouts: prompts -> Generator -> RewardFn -> a batch with everything the online trainers need.

This is the one place where a generation engine, a reward source and the models meet (DESIGN.md). The
stages are timed separately (``Rollout.stats``) so the benchmarks get a per-stage breakdown for free:

    tokenize -> generate -> decode -> score -> policy log-probs -> reference log-probs -> values

Choices (each one named, with the reason):
* Policy log-probs are *recomputed* by a forward pass of the policy in training mode (dropout is off in
  every RL model, see ``alignkit.models``), in fp32, at the sampling temperature. The sampler's own
  log-probs are kept too (``sampler_logprobs``): a mismatch between the two is how engine bugs show up,
  and with another engine (bf16, fused kernels) they differ by more than rounding.
* A response ends at its first EOS (included in the mask); tokens after it are padding.
* ``missing_eos_penalty``: a response cut at max_new_tokens gets this score *instead of* the reward
  function's (the issue's "replaces" policy; TRL subtracts it instead).
* Values: V(s_t) is the critic's output at the position *before* token t, the same offset as the logits
  that score token t.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields

import torch

from .generation.base import Completions, Generator, SamplingParams
from .generation.registry import make_generator
from .models.forward import concat_sequences, response_logprobs, response_values

__all__ = [
    "Rollout", "ScoredSamples", "check_prompt_columns", "collect_rollout", "completion_rows", "decode_completions",
    "sample_and_score", "sample_completion_rows", "tokenize_prompts",
]


@dataclass
class Rollout:
    """A batch of N sampled responses (prompt-major: the n samples of prompt 0 come first).

    Tensors (P = padded prompt length, R = padded response length):
        prompt_ids, prompt_mask: ``[N, P]`` left-padded.
        response_ids, response_mask: ``[N, R]`` right-padded; the mask includes the EOS token.
        logprobs: ``[N, R]`` policy log-probs recomputed in fp32 (training-mode forward, no grad; 0 at
            padding); None until :meth:`set_policy_logprobs` when ``collect_rollout`` left them to the trainer.
        sampler_logprobs: ``[N, R]`` log-probs reported by the generator.
        ref_logprobs: ``[N, R]`` or None, reference-model log-probs.
        values: ``[N, R]`` or None, critic values V(s_t).
        scores: ``[N]`` final sequence scores (after the missing-EOS policy).
        raw_scores: ``[N]`` what the reward function returned.
        finished: ``[N]`` bool, the response ended with EOS.
        group_ids: ``[N]`` index of the prompt each response answers.
        kl: ``[N, R]`` or None, the per-token KL to the reference by the trainer's estimator, computed once
            per rollout (:meth:`set_kl`) and read by every stage that needs it (0 at padding).
    Lists: prompts (N strings, repeated per sample), completions (N decoded responses).
    temperature: the temperature the responses were sampled at (and every log-prob is computed at).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor | None
    sampler_logprobs: torch.Tensor
    scores: torch.Tensor
    raw_scores: torch.Tensor
    finished: torch.Tensor
    group_ids: torch.Tensor
    prompts: list[str]
    completions: list[str]
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    temperature: float = 1.0
    stats: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    def set_policy_logprobs(self, logprobs: torch.Tensor) -> None:
        """Store the policy's log-probs ``[N, R]`` (zeroed at padding) and how far the sampler's are from them
        (``stats["sampler_logprob_max_abs_diff"]``)."""
        self.logprobs = logprobs * self.response_mask
        self.stats["sampler_logprob_max_abs_diff"] = float((self.logprobs - self.sampler_logprobs).abs().max())

    def set_kl(self, estimator: str) -> None:
        """Compute the per-token KL(pi || pi_ref) of the sampled tokens once, by ``estimator`` (k1/k2/k3 of
        :func:`~alignkit.core.kl.kl_estimate`), into ``kl`` ``[N, R]`` (0 at padding); needs both log-probs."""
        from .core.kl import kl_estimate

        if self.ref_logprobs is None or self.logprobs is None:
            raise ValueError("set_kl needs the policy's and the reference's log-probs")
        self.kl = kl_estimate(self.logprobs, self.ref_logprobs, estimator) * self.response_mask

    def to(self, device) -> Rollout:
        """A copy with every tensor on ``device``."""
        return Rollout(**{f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
                          for f in fields(self) for v in [getattr(self, f.name)]})

    @staticmethod
    def concat(parts: list[Rollout], pad_token_id: int) -> Rollout:
        """One rollout from several (e.g. every process's share, in rank order): prompts left-padded and
        responses right-padded to the widest part, group ids offset so that they stay distinct, per-stage
        times the slowest part's, batch statistics recomputed over all rows."""
        if len(parts) == 1:
            return parts[0]
        width_p = max(p.prompt_ids.shape[1] for p in parts)
        width_r = max(p.response_ids.shape[1] for p in parts)

        def pad(t: torch.Tensor | None, width: int, left: bool, value) -> torch.Tensor | None:
            if t is None or t.shape[1] == width:
                return t
            fill = t.new_full((t.shape[0], width - t.shape[1]), value)
            return torch.cat([fill, t] if left else [t, fill], 1)

        columns: dict[str, list] = {f.name: [] for f in fields(Rollout)}
        offset = 0
        for part in parts:
            columns["prompt_ids"].append(pad(part.prompt_ids, width_p, True, pad_token_id))
            columns["prompt_mask"].append(pad(part.prompt_mask, width_p, True, 0))
            columns["response_ids"].append(pad(part.response_ids, width_r, False, pad_token_id))
            for name in ("response_mask", "logprobs", "sampler_logprobs", "ref_logprobs", "values", "kl"):
                columns[name].append(pad(getattr(part, name), width_r, False, 0))
            for name in ("scores", "raw_scores", "finished", "prompts", "completions"):
                columns[name].append(getattr(part, name))
            columns["group_ids"].append(part.group_ids + offset)
            offset += int(part.group_ids.max()) + 1
        out = {}
        for name, values in columns.items():
            if name in ("prompts", "completions"):
                out[name] = [x for v in values for x in v]
            elif name in ("temperature", "stats"):
                continue
            else:
                out[name] = None if any(v is None for v in values) else torch.cat(values, 0)
        stats: dict[str, float] = {}
        for part in parts:
            for key, value in part.stats.items():
                if key.startswith("time/") or key.endswith("max_abs_diff"):
                    stats[key] = max(stats.get(key, value), value)
                elif key == "prompts_truncated":
                    stats[key] = stats.get(key, 0.0) + value
        merged = Rollout(**out, temperature=parts[0].temperature, stats=stats)
        merged.stats.update(batch_stats(merged.response_mask, merged.finished, merged.scores, merged.raw_scores))
        return merged

    def sequences(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``index`` as model input: (ids, mask, position ids), each ``[b, P + R]``."""
        return concat_sequences(self.prompt_ids[index], self.prompt_mask[index], self.response_ids[index],
                                self.response_mask[index])

    @property
    def input_ids(self) -> torch.Tensor:
        """``[N, P + R]`` prompt and response tokens."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """``[N, P + R]``."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def select(self, index: torch.Tensor | list[int]) -> Rollout:
        """Rows ``index`` as a new Rollout (for minibatches)."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                out[f.name] = value[index.to(value.device)]
            elif isinstance(value, list):
                out[f.name] = [value[i] for i in index.tolist()]
            else:
                out[f.name] = value
        return Rollout(**out)


def tokenize_prompts(
    tokenizer, prompts: list[str], max_prompt_length: int | None = None, prompt_truncation: str = "left",
    chat_template: str = "off", system_prompt: str = "",
) -> tuple[list[list[int]], int]:
    """Tokenise prompts. Returns (ids, number truncated).

    ``chat_template`` / ``system_prompt``: see :func:`alignkit.data.chat.render_prompt` (``"on"``: each prompt
    becomes a user turn, after the system prompt, rendered by the tokenizer's chat template and tokenised
    without added special tokens; ``"off"``: the text as is, special tokens as the tokenizer adds them).
    ``prompt_truncation``: ``"error"`` raises on a prompt longer than ``max_prompt_length`` naming its index;
    ``"left"`` keeps its last ``max_prompt_length`` tokens (the end of a prompt matters most for the reply).
    """
    from .data.chat import render_prompt

    if prompt_truncation not in ("error", "left"):
        raise ValueError(f"prompt_truncation must be 'error' or 'left', got {prompt_truncation!r}")
    ids = []
    truncated = 0
    for i, text in enumerate(prompts):
        if not isinstance(text, str):
            raise TypeError(f"prompt {i} must be a string, got {type(text).__name__}")
        text, rendered = render_prompt(text, tokenizer, chat_template, system_prompt)
        tokens = tokenizer(text, add_special_tokens=not rendered)["input_ids"]
        if not tokens:
            raise ValueError(f"prompt {i} tokenises to nothing: {text!r}")
        if max_prompt_length is not None and len(tokens) > max_prompt_length:
            if prompt_truncation == "error":
                raise ValueError(
                    f"prompt {i} has {len(tokens)} tokens, more than max_prompt_length={max_prompt_length} "
                    "(set prompt_truncation='left' to keep its last tokens)"
                )
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is not None and tokens[0] == bos and max_prompt_length > 1:
                tokens = [bos] + tokens[len(tokens) - max_prompt_length + 1 :]  # keep the BOS the model expects
            else:
                tokens = tokens[-max_prompt_length:]
            truncated += 1
        ids.append(list(tokens))
    return ids, truncated


def decode_completions(tokenizer, completions: Completions) -> list[str]:
    """Response texts (special tokens skipped), one per row of ``completions``."""
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(completions.response_ids, completions.response_mask,
                                                            strict=True)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def completion_rows(tokenizer, completions: Completions, prompts: list[str]) -> list[dict]:
    """``{"prompt", "completion", "finished"}`` per row of ``completions``; ``prompts`` are the P prompt texts
    (row i answers ``prompts[group_ids[i]]``)."""
    texts = decode_completions(tokenizer, completions)
    return [{"prompt": prompts[g], "completion": t, "finished": f}
            for g, t, f in zip(completions.group_ids.tolist(), texts, completions.finished.tolist(), strict=True)]


def check_prompt_columns(columns: dict[str, Sequence] | None, num_prompts: int) -> dict[str, Sequence]:
    """Extra dataset columns for a reward function must hold one value per prompt; returns them as a dict."""
    columns = dict(columns or {})
    for name, values in columns.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != num_prompts:
            got = len(values) if hasattr(values, "__len__") else type(values).__name__
            raise ValueError(f"column {name!r} must have one value per prompt ({num_prompts}), got {got}")
    return columns


@dataclass
class ScoredSamples:
    """One generate call, decoded and (optionally) scored. N = len(rows) x n samples, prompt-major.

    Attributes:
        completions: the engine's :class:`~alignkit.generation.Completions` (N rows).
        texts: ``[N]`` decoded responses (special tokens skipped).
        owner: ``[N]`` index, in the caller's prompt list, of the prompt each sample answers.
        raw_scores: ``[N]`` float32 reward-function scores, or None when no reward function was given.
    """

    completions: Completions
    texts: list[str]
    owner: list[int]
    raw_scores: torch.Tensor | None = None


def sample_and_score(
    generator: Generator,
    tokenizer,
    prompt_ids: list[list[int]],
    sampling: SamplingParams,
    prompts: list[str],
    rows: list[int] | None = None,
    reward_fn: Callable[..., list[float]] | None = None,
    columns: dict[str, Sequence] | None = None,
    stats: dict[str, float] | None = None,
) -> ScoredSamples:
    """Generate -> decode -> score: the stage the online trainers, Best-of-N and RLAIF labelling share.

    Args:
        generator: any :class:`~alignkit.generation.Generator`; it must return ``sampling.n`` samples per prompt,
            prompt-major (checked).
        tokenizer: decodes the responses.
        prompt_ids: token ids of the prompts to sample for (``len(rows)`` of them).
        sampling: sampling parameters.
        prompts: the caller's prompt strings (all of them; ``rows`` index into them).
        rows: which of ``prompts`` ``prompt_ids`` encode (default: all, in order).
        reward_fn: ``(prompts, completions, **columns) -> list[float]``, validated; a bad value raises
            :class:`~alignkit.rewards.InvalidRewardError` naming the prompt index (in ``prompts``) and the sample.
        columns: extra per-prompt columns (one value per entry of ``prompts``), repeated per sample.
        stats: ``time/generate_s``, ``time/decode_s``, ``time/score_s`` are added to it.
    """
    rows = list(range(len(prompts))) if rows is None else list(rows)
    stats = {} if stats is None else stats
    t = time.perf_counter()
    comp = generator.generate(prompt_ids, sampling)
    t = lap(stats, "time/generate_s", t)
    m = sampling.n
    if comp.response_ids.shape[0] != len(rows) * m:
        raise ValueError(f"the generator returned {comp.response_ids.shape[0]} completions for {len(rows)} "
                         f"prompts x {m} samples")
    groups = comp.group_ids.tolist()
    if groups != [k for k in range(len(rows)) for _ in range(m)]:
        raise ValueError(f"the generator's completions are not grouped prompt-major ({m} samples per prompt)")
    owner = [rows[g] for g in groups]
    texts = decode_completions(tokenizer, comp)
    t = lap(stats, "time/decode_s", t)
    raw_scores = None
    if reward_fn is not None:
        raw_scores = _score(reward_fn, prompts, owner, texts, columns or {}, m)
        lap(stats, "time/score_s", t)
    return ScoredSamples(comp, texts, owner, raw_scores)


def _score(reward_fn, prompts: list[str], owner: list[int], completions: list[str], columns: dict[str, Sequence],
           m: int) -> torch.Tensor:
    """Score samples (``owner[i]``: prompt index of sample i); ``[len(owner)]`` float32.

    ``call_reward_fn`` names the *sample* index of a bad value within this call; re-raise naming the prompt
    (its index in the caller's list, and which of its m samples) instead.
    """
    from .rewards.base import InvalidRewardError, call_reward_fn, reward_fn_name, validate_rewards

    name = reward_fn_name(reward_fn)
    returned = []

    def recorded(ps, cs, **cols):
        values = reward_fn(ps, cs, **cols)
        returned.append(list(values) if isinstance(values, Iterator) else values)  # a generator reads once
        return returned[-1]

    sample_columns = {k: [v[i] for i in owner] for k, v in columns.items()}
    try:
        return call_reward_fn(recorded, [prompts[i] for i in owner], completions, source_name=name,
                              **sample_columns)
    except InvalidRewardError as e:
        if e.index is None or not returned:
            raise
        # the first invalid value and why (validate_rewards stopped at it in "raise" mode)
        _, why = validate_rewards(returned[-1], len(owner), name, on_invalid="skip").problems[0]
        p, k = owner[e.index], e.index % m
        raise InvalidRewardError(
            f"{name}: reward for prompt index {p} (sample {k + 1} of {m}) {why} "
            f"(prompt: {_snippet(prompts[p])}; completion: {_snippet(completions[e.index])})",
            name,
            index=p,
        ) from None


def _snippet(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def sample_completion_rows(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int,
                           seed: int) -> list[dict]:
    """Seeded completions of ``model`` for token-id prompts, as ``{"prompt", "completion", "finished"}`` rows (the
    report's samples of the offline trainers). New tokens are capped to stay within the model's context: a
    sample for the report must never fail the run (no rows when there is no room)."""
    engine = make_generator(model, tokenizer)
    room = (getattr(engine, "max_length", None) or 1 << 30) - max(map(len, prompt_ids))
    new_tokens = min(max_new_tokens, room)
    if new_tokens < 1:
        return []
    comp = engine.generate(prompt_ids, SamplingParams(max_new_tokens=new_tokens, seed=seed))
    return completion_rows(tokenizer, comp, [tokenizer.decode(p) for p in prompt_ids])


@torch.no_grad()
def collect_rollout(
    prompts: list[str],
    tokenizer,
    generator: Generator,
    reward_fn: Callable[..., list[float]],
    policy: torch.nn.Module,
    sampling: SamplingParams,
    reference=None,
    critic: Callable[..., torch.Tensor] | None = None,
    columns: dict[str, list] | None = None,
    missing_eos_penalty: float | None = None,
    max_prompt_length: int | None = None,
    prompt_truncation: str = "left",
    chat_template: str = "off",
    system_prompt: str = "",
    forward_batch_size: int | None = None,
    policy_logprobs: bool = True,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> Rollout:
    """Sample ``sampling.n`` responses per prompt, score them, and compute log-probs (and values).

    Args:
        prompts: B prompt strings.
        tokenizer: a transformers tokenizer (encodes prompts, decodes responses).
        generator: any :class:`~alignkit.generation.Generator`.
        reward_fn: ``(prompts, completions, **columns) -> list[float]`` (see ``alignkit.rewards``);
            its output is validated (count, finiteness, type) with errors naming the prompt index.
        policy: the causal LM being trained; log-probs are recomputed with it in training mode.
        sampling: sampling parameters (their temperature is used for the log-probs too).
        reference: causal LM or object with ``logits(ids, mask, pos)``; None skips reference log-probs.
        critic: ``(ids, mask, pos) -> [N, L]`` values; None skips values.
        columns: extra per-prompt dataset columns (lists of length B) passed to the reward function,
            repeated per sample.
        missing_eos_penalty: score given to responses that never produced EOS (None: keep their score).
        max_prompt_length, prompt_truncation, chat_template, system_prompt: see :func:`tokenize_prompts`
            (``SamplingConfig.prompt_kwargs()`` gives all four).
        forward_batch_size: micro-batch size for the log-prob and value forwards (None: all at once).
        policy_logprobs: False leaves ``logprobs`` to the caller (``None`` here): a trainer whose update is
            one on-policy step fills them from the update's own forward pass (see
            ``OnlineTrainer.fuses_policy_forward``).
        autocast: a context-manager factory around the log-prob and value forwards (e.g. bf16 autocast);
            generation runs outside it, in the engine's own precision.
    Returns:
        a :class:`Rollout` with ``stats`` holding per-stage seconds and batch statistics.
    """
    stats: dict[str, float] = {}
    t = time.perf_counter()
    prompt_tokens, n_truncated = tokenize_prompts(tokenizer, prompts, max_prompt_length, prompt_truncation,
                                                  chat_template, system_prompt)
    stats["prompts_truncated"] = float(n_truncated)
    lap(stats, "time/tokenize_s", t)
    scored = sample_and_score(generator, tokenizer, prompt_tokens, sampling, prompts, reward_fn=reward_fn,
                              columns=check_prompt_columns(columns, len(prompts)), stats=stats)
    comp, completions, raw_scores = scored.completions, scored.texts, scored.raw_scores
    sample_prompts = [prompts[i] for i in scored.owner]
    t = time.perf_counter()
    scores = raw_scores.clone()
    if missing_eos_penalty is not None:
        scores = torch.where(comp.finished.cpu(), scores, torch.full_like(scores, float(missing_eos_penalty)))

    device = comp.response_ids.device
    forwards = autocast() if autocast is not None else nullcontext()
    with forwards:
        logprobs, ref_logprobs, values = _rollout_forwards(
            comp, policy, reference, critic, sampling.temperature, forward_batch_size, policy_logprobs, stats, t)
    stats.update(batch_stats(comp.response_mask, comp.finished, scores, raw_scores))
    rollout = Rollout(
        prompt_ids=comp.prompt_ids,
        prompt_mask=comp.prompt_mask,
        response_ids=comp.response_ids,
        response_mask=comp.response_mask,
        logprobs=None,
        sampler_logprobs=comp.logprobs,
        scores=scores.to(device),
        raw_scores=raw_scores.to(device),
        finished=comp.finished,
        group_ids=comp.group_ids,
        prompts=sample_prompts,
        completions=completions,
        ref_logprobs=ref_logprobs,
        values=values,
        temperature=sampling.temperature,
        stats=stats,
    )
    if logprobs is not None:
        rollout.set_policy_logprobs(logprobs)
    return rollout


def _rollout_forwards(comp: Completions, policy, reference, critic, temperature: float, batch_size: int | None,
                      policy_logprobs: bool, stats: dict[str, float], t: float):
    """The policy / reference log-prob and value forwards of :func:`collect_rollout` (each stage timed)."""
    logprobs = None
    if policy_logprobs:
        was_training = policy.training
        policy.train()  # dropout is off in RL models: training mode only matters for layers like batch-norm
        try:
            logprobs = response_logprobs(policy, comp.prompt_ids, comp.prompt_mask, comp.response_ids,
                                         comp.response_mask, temperature, batch_size)
        finally:
            policy.train(was_training)
    t = lap(stats, "time/policy_logprobs_s", t)
    ref_logprobs = None
    if reference is not None:
        ref_logprobs = response_logprobs(reference, comp.prompt_ids, comp.prompt_mask, comp.response_ids,
                                         comp.response_mask, temperature, batch_size)
    t = lap(stats, "time/ref_logprobs_s", t)
    values = None
    if critic is not None:
        values = response_values(critic, comp.prompt_ids, comp.prompt_mask, comp.response_ids,
                                 comp.response_mask, batch_size)
    lap(stats, "time/values_s", t)
    return logprobs, ref_logprobs, values


def batch_stats(response_mask: torch.Tensor, finished: torch.Tensor, scores: torch.Tensor,
                raw_scores: torch.Tensor) -> dict[str, float]:
    """Mean response length, EOS rate and mean (raw) score of a batch of N responses."""
    return {
        "response_length_mean": float(response_mask.sum(-1).float().mean()),
        "eos_rate": float(finished.float().mean()),
        "score_mean": float(scores.mean()),
        "raw_score_mean": float(raw_scores.mean()),
    }


def lap(stats: dict[str, float], key: str, since: float) -> float:
    """Add the seconds since ``since`` to ``stats[key]`` (a stage's time, summed over calls); returns now."""
    now = time.perf_counter()
    stats[key] = stats.get(key, 0.0) + now - since
    return now
