"""One readable file per method. Each states its exact variant at the top."""

from .best_of_n import BestOfNConfig, BestOfNResult, best_of_n, kl_bound
from .dpo import DPOConfig, DPOTrainer
from .online import OnlineConfig, OnlineTrainer
from .ppo import PPOConfig, PPOTrainer
from .reinforce import ReinforceConfig, ReinforceTrainer
from .reward_model import RewardConfig, RewardTrainer
from .rlaif import AILabels, RLAIFConfig, label_pairs_with_judge, train_on_ai_labels
from .sft import SFTConfig, SFTTrainer
from .trpo import TRPOConfig, TRPOTrainer

__all__ = [
    "AILabels",
    "BestOfNConfig",
    "BestOfNResult",
    "DPOConfig",
    "DPOTrainer",
    "OnlineConfig",
    "OnlineTrainer",
    "PPOConfig",
    "PPOTrainer",
    "RLAIFConfig",
    "ReinforceConfig",
    "ReinforceTrainer",
    "RewardConfig",
    "RewardTrainer",
    "SFTConfig",
    "SFTTrainer",
    "TRPOConfig",
    "TRPOTrainer",
    "best_of_n",
    "kl_bound",
    "label_pairs_with_judge",
    "train_on_ai_labels",
]
