"""One readable file per method. Each states its exact variant at the top."""

from .dpo import DPOConfig, DPOTrainer
from .reward_model import RewardConfig, RewardTrainer
from .sft import SFTConfig, SFTTrainer

__all__ = ["DPOConfig", "DPOTrainer", "RewardConfig", "RewardTrainer", "SFTConfig", "SFTTrainer"]
