"""Reward model training with the Bradley-Terry loss.

Variant (seed 001 "REWARD MODEL ARCHITECTURE" and "Loss"; Ouyang et al. 2022 step 2):
  * r(x, y) = linear head on the last real token's final hidden state (``alignkit.models.RewardModel``,
    head initialised N(0, 1/(d_model + 1)), Stiennon et al. 2020);
  * loss per pair: -log sigma(r(x, y_w) - r(x, y_l) - m), m an optional per-pair margin (Llama 2,
    section 3.2.2), averaged over the pairs of the global batch;
  * optional reward centring (Eisenstein et al. 2023): + c * mean((r_w + r_l)^2), which pins the
    free additive constant of Bradley-Terry rewards near 0;
  * chosen and rejected responses go through the model in one forward pass.
Metrics: loss, accuracy (r_w > r_l), margin (r_w - r_l), mean chosen / rejected reward; the same on
held-out pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.preference import bradley_terry_loss
from ..training import TrainConfig, Trainer, option
from ..training.config import TokenizeConfig
from ..training.loop import pad_token_id_of


@dataclass
class RewardConfig(TrainConfig, TokenizeConfig):
    """Reward-model settings."""

    center_rewards_coef: float = option(0.0, "weight of the reward-centring term mean((r_w + r_l)^2)",
                                        bounds="[0, inf)")


class RewardTrainer(Trainer):
    """Trains an ``alignkit.models.RewardModel`` on ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` pairs
    (an optional ``"margin"`` float per pair)."""

    name = "reward"

    def __init__(self, config: RewardConfig, model, train_examples, eval_examples=None, tokenizer=None,
                 pad_token_id: int | None = None):
        from ..data import PreferenceCollator

        pad = pad_token_id_of(pad_token_id, tokenizer, "RewardTrainer")
        self._collator = PreferenceCollator(pad)
        super().__init__(config, model, train_examples, eval_examples, tokenizer)

    def count_units(self, examples: list[dict]) -> int:
        return len(examples)

    def collate(self, examples: list[dict]) -> dict:
        batch = self._collator(examples)
        if any("margin" in ex for ex in examples):
            import torch

            batch["margin"] = torch.tensor([float(ex.get("margin", 0.0)) for ex in examples])
        return batch

    def compute_loss(self, model, batch: dict, normalizer: float):
        device = self.accelerator.device
        rewards = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), right_padded=True)  # [2B]
        b = batch["num_pairs"]
        chosen, rejected = rewards[:b], rewards[b:]
        margin = batch["margin"].to(device) if "margin" in batch else None
        mean_loss, m = bradley_terry_loss(chosen, rejected, margin)
        if self.config.center_rewards_coef:
            mean_loss = mean_loss + self.config.center_rewards_coef * ((chosen + rejected) ** 2).mean()
        scale = b / normalizer  # mean over this micro-batch -> its share of the global mean
        metrics = {"loss": mean_loss.item() * scale, "accuracy": m["rewards_accuracy"] * scale,
                   "margin": m["rewards_margin"] * scale, "reward_chosen": m["rewards_chosen"] * scale,
                   "reward_rejected": m["rewards_rejected"] * scale}
        return mean_loss * scale, metrics

    def sample_rows(self) -> list[dict]:
        """The first held-out (else training) pairs with the trained model's rewards."""
        examples = self.sample_examples()
        if not examples or self.tokenizer is None:
            return []
        import torch

        batch = self._collator(list(examples))
        model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            rewards = model(batch["input_ids"].to(self.accelerator.device),
                            batch["attention_mask"].to(self.accelerator.device)).float().cpu()
        b, dec = len(examples), self.tokenizer.decode
        return [{"prompt": dec(ex["prompt_ids"]), "chosen": dec(ex["chosen_ids"], skip_special_tokens=True),
                 "rejected": dec(ex["rejected_ids"], skip_special_tokens=True),
                 "reward_chosen": float(rewards[i]), "reward_rejected": float(rewards[b + i])}
                for i, ex in enumerate(examples)]

