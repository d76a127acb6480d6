"""Preference-based RL: PPO on a reward model learnt from pairwise segment preferences.

Exact variant (Christiano et al. 2017, "Deep Reinforcement Learning from Human Preferences", section 2.2,
with a synthetic labeller as in their section 3.1; seed 001 Bradley-Terry):

1. Each update, ``pairs_per_update`` pairs of trajectory segments of ``segment_length`` steps are cut from
   the current policy's rollout (:func:`sample_segments`). A segment stays inside one episode. It may run
   into a *termination*: the steps after it are masked (true reward 0, no predicted reward), so a segment
   that ends the episode early is worth less, which is all CartPole's reward says. Segments that would
   cross a time-limit truncation or the rollout's end are not drawn (their continuation is unknown).
2. Synthetic labels: segment A is preferred to B with probability sigma((R_A - R_B) / temperature), R the
   TRUE undiscounted segment return (Bradley-Terry on the true returns; temperature -> 0 is the paper's
   noiseless oracle). A pair with *equal* true returns is "equally preferable" (the paper's section 2.2.3:
   mu uniform over {1, 2}): it enters the buffer in both orders, so its BT loss is
   1/2 [-log sigma(d) - log sigma(-d)], which pulls the predicted difference d to 0, instead of one
   coin-flip label. Once a good CartPole policy survives every segment, nearly all pairs tie; coin flips then
   filled the buffer with noise and one seed in three collapsed (docs/benchmarks.md). Pairs go into a FIFO
   buffer of ``buffer_size`` pairs (a tied pair counts twice).
3. Reward model r_hat(s, a) (an MLP, :class:`~.networks.RewardNet`) trained with
   :func:`alignkit.core.bradley_terry_loss` on the summed predicted rewards of the two segments
   (P[A > B] = sigma(sum_A r_hat - sum_B r_hat), the paper's eq. 1): ``reward_updates`` Adam steps on
   minibatches of ``reward_batch_size`` pairs from the buffer per PPO update. One model, no ensemble.
4. PPO (:class:`~.ppo.PPOAgent`, unchanged) is trained on r_hat in place of the environment reward, with the
   environment's terminations and truncations. r_hat is normalised per rollout to unit standard deviation
   (:func:`alignkit.core.whiten` with ``shift_mean=False``: the paper normalises r_hat to a fixed scale; the
   mean is kept because the segments' different lengths give it a meaning here, the value of surviving).
5. The run is judged by the TRUE return (the collector's and the evaluator's episode returns are the env's).

Shapes: ``S`` segments, ``L`` segment length, ``P`` pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.core import bradley_terry_loss, whiten

from .networks import RewardNet
from .ppo import PPOAgent
from .rollout import Rollout

__all__ = ["Segments", "sample_segments", "synthetic_preferences", "PreferenceBuffer", "segment_returns",
           "ordering_agreement", "split_pairs", "train_reward_model", "PreferencePPOAgent"]


@dataclass
class Segments:
    """obs ``[S, L, D]``, actions ``[S, L]`` or ``[S, L, M]``, mask ``[S, L]`` (bool), true_return ``[S]``."""

    obs: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    true_return: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def take(self, idx: torch.Tensor) -> Segments:
        return Segments(self.obs[idx], self.actions[idx], self.mask[idx], self.true_return[idx])

    @staticmethod
    def cat(parts: list[Segments]) -> Segments:
        return Segments(*(torch.cat([getattr(p, k) for p in parts]) for k in ("obs", "actions", "mask",
                                                                              "true_return")))


def _segment_starts(rollout: Rollout, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eligible (flat start index ``[E]``, real length ``[E]``) pairs; see the module docstring, item 1."""
    n, t_max = rollout.rewards.shape
    terminated, truncated, valid = rollout.terminated.tolist(), rollout.truncated.tolist(), rollout.valid.tolist()
    starts, lengths = [], []
    for env in range(n):
        end, end_kind = t_max, "open"  # the first episode end at or after t, scanning backwards
        for t in range(t_max - 1, -1, -1):
            if terminated[env][t]:
                end, end_kind = t, "terminated"
            elif truncated[env][t]:
                end, end_kind = t, "truncated"
            if not valid[env][t]:
                continue
            if t + length - 1 < end and t + length <= t_max:
                starts.append(env * t_max + t)
                lengths.append(length)
            elif end_kind == "terminated" and end - t + 1 <= length:
                starts.append(env * t_max + t)
                lengths.append(end - t + 1)
    return torch.tensor(starts, dtype=torch.long), torch.tensor(lengths, dtype=torch.long)


def sample_segments(rollout: Rollout, length: int, count: int) -> Segments | None:
    """``count`` segments of ``length`` steps drawn uniformly (with replacement) from the eligible starts of
    ``rollout``; None if there is none. Uses torch's global RNG."""
    starts, real = _segment_starts(rollout, length)
    if starts.numel() == 0:
        return None
    pick = torch.randint(starts.numel(), (count,))
    offsets = torch.arange(length)
    mask = offsets[None, :] < real[pick][:, None]
    n, t_max = rollout.rewards.shape
    flat_index = starts[pick][:, None] + torch.minimum(offsets[None, :], real[pick][:, None] - 1)
    obs = rollout.obs.reshape(n * t_max, -1)[flat_index]
    actions = rollout.actions.reshape(n * t_max, *rollout.actions.shape[2:])[flat_index]
    rewards = rollout.rewards.reshape(-1)[flat_index] * mask
    return Segments(obs, actions, mask, rewards.sum(-1))


def synthetic_preferences(return_a: torch.Tensor, return_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[P]`` bool: A preferred, sampled from P(A > B) = sigma((R_A - R_B) / temperature); 0 = deterministic
    (ties broken by a coin flip)."""
    if temperature < 0:
        raise ValueError(f"preference temperature must be >= 0, got {temperature}")
    diff = return_a - return_b
    if temperature == 0:
        p = torch.where(diff == 0, torch.full_like(diff, 0.5), (diff > 0).to(diff.dtype))
    else:
        p = torch.sigmoid(diff / temperature)
    return torch.rand_like(p) < p


class PreferenceBuffer:
    """FIFO store of labelled pairs (chosen, rejected), at most ``capacity`` pairs."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"preference buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.chosen: Segments | None = None
        self.rejected: Segments | None = None

    def __len__(self) -> int:
        return 0 if self.chosen is None else len(self.chosen)

    def add(self, chosen: Segments, rejected: Segments) -> None:
        if self.chosen is None:
            self.chosen, self.rejected = chosen, rejected
        else:
            self.chosen = Segments.cat([self.chosen, chosen])
            self.rejected = Segments.cat([self.rejected, rejected])
        if len(self.chosen) > self.capacity:
            keep = torch.arange(len(self.chosen) - self.capacity, len(self.chosen))
            self.chosen, self.rejected = self.chosen.take(keep), self.rejected.take(keep)

    def sample(self, batch_size: int) -> tuple[Segments, Segments]:
        idx = torch.randint(len(self), (batch_size,))
        return self.chosen.take(idx), self.rejected.take(idx)


def segment_returns(reward_net: RewardNet, segments: Segments) -> torch.Tensor:
    """sum_t r_hat(s_t, a_t) over each segment's real steps: ``[S]``."""
    s, length = segments.mask.shape
    r = reward_net(segments.obs.reshape(s * length, -1),
                   segments.actions.reshape(s * length, *segments.actions.shape[2:])).reshape(s, length)
    return (r * segments.mask).sum(-1)


def ordering_agreement(reward_net: RewardNet, a: Segments, b: Segments) -> float:
    """Share of pairs with different true returns whose predicted-return order matches the true order
    (NaN if every pair is a tie)."""
    with torch.no_grad():
        pred = segment_returns(reward_net, a) - segment_returns(reward_net, b)
    true = a.true_return - b.true_return
    distinct = true != 0
    if not distinct.any():
        return float("nan")
    return float(((pred > 0) == (true > 0))[distinct].float().mean())


def split_pairs(segments: Segments, temperature: float) -> tuple[Segments, Segments, float]:
    """Pair segment i with i + S/2, label by :func:`synthetic_preferences`; a tied pair (equal true returns) is
    returned in both orders (equally preferable, see the module docstring). Returns (chosen, rejected, share
    of labels that contradict the true order among non-tied pairs, NaN if all tie)."""
    half = len(segments) // 2
    first, second = torch.arange(half), torch.arange(half, 2 * half)
    a, b = segments.take(first), segments.take(second)
    tie = a.true_return == b.true_return
    prefer_a = synthetic_preferences(a.true_return, b.true_return, temperature) | tie  # a tie: (a, b) and (b, a)
    chosen_idx = torch.cat([torch.where(prefer_a, first, second), second[tie]])
    rejected_idx = torch.cat([torch.where(prefer_a, second, first), first[tie]])
    chosen, rejected = segments.take(chosen_idx), segments.take(rejected_idx)
    distinct = chosen.true_return != rejected.true_return
    flipped = float((chosen.true_return < rejected.true_return)[distinct].float().mean()) if distinct.any() else \
        float("nan")
    return chosen, rejected, flipped


def train_reward_model(reward_net: RewardNet, optimiser: torch.optim.Optimizer, buffer: PreferenceBuffer,
                       steps: int, batch_size: int) -> dict[str, float]:
    """``steps`` Adam steps of :func:`alignkit.core.bradley_terry_loss` on buffer minibatches; mean metrics."""
    sums: dict[str, float] = {}
    for _ in range(steps):
        chosen, rejected = buffer.sample(batch_size)
        loss, metrics = bradley_terry_loss(segment_returns(reward_net, chosen), segment_returns(reward_net, rejected))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        for key, value in metrics.items():
            sums[f"rm_{key}"] = sums.get(f"rm_{key}", 0.0) + value
    return {key: value / max(steps, 1) for key, value in sums.items()}


class PreferencePPOAgent:
    """PPO on a learnt reward from synthetic segment preferences (see the module docstring).

    Args:
        ppo: the PPO learner (its policy and critic are this agent's).
        reward_net: r_hat(s, a).
        reward_learning_rate: Adam step size of the reward model.
        segment_length: L, steps per segment.
        pairs_per_update: new labelled pairs per PPO update.
        buffer_size: pairs kept (FIFO).
        reward_updates, reward_batch_size: reward-model Adam steps per PPO update, pairs per step.
        temperature: Bradley-Terry temperature of the synthetic labeller (0 = always the better segment).
    """

    def __init__(self, ppo: PPOAgent, reward_net: RewardNet, reward_learning_rate: float = 1e-3,
                 segment_length: int = 25, pairs_per_update: int = 16, buffer_size: int = 4096,
                 reward_updates: int = 8, reward_batch_size: int = 64, temperature: float = 1.0):
        if segment_length < 1 or pairs_per_update < 1:
            raise ValueError("segment_length and pairs_per_update must be >= 1")
        self.ppo, self.reward_net = ppo, reward_net
        self.policy, self.value_net, self.value_fn = ppo.policy, ppo.value_net, ppo.value_fn
        self.segment_length, self.pairs_per_update = segment_length, pairs_per_update
        self.reward_updates, self.reward_batch_size, self.temperature = reward_updates, reward_batch_size, temperature
        self.buffer = PreferenceBuffer(buffer_size)
        self.reward_optimiser = torch.optim.Adam(reward_net.parameters(), lr=reward_learning_rate)
        self.labels = 0

    def learnt_rewards(self, rollout: Rollout) -> torch.Tensor:
        """Normalised r_hat ``[N, T]`` for every step of ``rollout`` (0 at reset steps)."""
        n, t = rollout.rewards.shape
        with torch.no_grad():
            r = self.reward_net(rollout.obs.reshape(n * t, -1),
                                rollout.actions.reshape(n * t, *rollout.actions.shape[2:])).reshape(n, t)
        return whiten(r, rollout.valid, shift_mean=False)

    def update(self, rollout: Rollout, progress: float) -> dict[str, float]:
        metrics: dict[str, float] = {}
        segments = sample_segments(rollout, self.segment_length, 2 * self.pairs_per_update)
        if segments is not None:
            chosen, rejected, flipped = split_pairs(segments, self.temperature)
            metrics["pref_heldout_agreement"] = ordering_agreement(self.reward_net, chosen, rejected)
            metrics["pref_label_flip_rate"] = flipped
            self.buffer.add(chosen, rejected)
            self.labels += len(segments) // 2  # pairs shown to the labeller (a tie is stored twice)
        metrics["pref_labels"] = float(self.labels)
        if len(self.buffer):
            metrics.update(train_reward_model(self.reward_net, self.reward_optimiser, self.buffer,
                                              self.reward_updates, self.reward_batch_size))
        rewards = self.learnt_rewards(rollout)
        metrics["learnt_reward_mean"] = float(rewards[rollout.valid].mean())
        metrics.update(self.ppo.update(rollout, progress, rewards=rewards))
        return metrics
