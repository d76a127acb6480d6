"""alignkit.core: the pure tensor math of every algorithm in alignkit.

Torch only: no transformers, no config objects, no I/O, no global state. Every function states its
tensor shapes and the equation it implements. The LM trainers and the classic-control agents share it.
"""

from .baselines import (
    BASELINES,
    batch_mean_baseline,
    compute_baseline_advantages,
    group_normalized_advantages,
    leave_one_out_baseline,
    prompt_mean_baseline,
)
from .kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
    kl_penalised_rewards,
    kl_shaped_rewards,
)
from .logprobs import entropy_from_logits, naive_token_logprobs, token_logprobs
from .masked import LOSS_AGGREGATION_MODES, aggregate_loss, masked_mean, masked_sum, masked_var, whiten
from .policy_loss import ppo_clip_loss, reinforce_loss
from .preference import DPO_LOSS_TYPES, bradley_terry_loss, dpo_loss
from .returns import gae, gae_from_transitions, reward_to_go
from .trust_region import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    trpo_step,
)
from .value_loss import explained_variance, value_loss

__all__ = [
    "BASELINES",
    "DPO_LOSS_TYPES",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATION_MODES",
    "AdaptiveKLController",
    "FixedKLController",
    "LineSearchResult",
    "aggregate_loss",
    "backtracking_line_search",
    "batch_mean_baseline",
    "bradley_terry_loss",
    "compute_baseline_advantages",
    "conjugate_gradient",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "fisher_vector_product",
    "gae",
    "gae_from_transitions",
    "group_normalized_advantages",
    "kl_estimate",
    "kl_penalised_rewards",
    "kl_shaped_rewards",
    "leave_one_out_baseline",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "naive_token_logprobs",
    "ppo_clip_loss",
    "prompt_mean_baseline",
    "reinforce_loss",
    "reward_to_go",
    "token_logprobs",
    "trpo_step",
    "value_loss",
    "whiten",
]
