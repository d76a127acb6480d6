"""Direct Preference Optimization and its common variants.

Variant (Rafailov et al. 2023; seeds 001-002 "Direct Preference Optimization"):
  * L = mean over pairs of loss_type(h), h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) -
    log pi_ref(y_l|x)], with log pi(y|x) the *sum* of response-token log-probs;
    loss types from ``alignkit.core.preference``: sigmoid (DPO), ipo (on those sums: Azar et al. eq. 17 as
    written), ipo-token-mean (IPO on per-token mean log-probs of each response, as the IPO authors' code and
    TRL's ``loss_type="ipo"``: the same beta means a far stronger pull to the reference there), hinge, and
    conservative DPO (sigmoid with label_smoothing);
  * pi_ref is the policy at the start of training (a frozen copy, or for a LoRA policy the same weights
    with the adapter disabled). By default its log-probs are computed once, up front (with a progress bar),
    for the pairs the run will train on (all of them once the run spans an epoch, else the ``max_steps`` x
    ``batch_size`` it will draw) and the eval pairs (``precompute_ref_logprobs``); the reference is then
    dropped: training memory is that of the policy alone. ``precompute_ref_logprobs=False`` computes them on
    the fly each step;
  * chosen and rejected responses go through the policy in one forward pass.
Metrics: loss, implicit rewards beta * log(pi/pi_ref) of chosen and rejected, their accuracy and margin,
policy log-probs of chosen and rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.logprobs import token_logprobs
from ..core.preference import DPO_LOSS_TYPES, TOKEN_MEAN_LOSS_TYPES, dpo_loss
from ..models.forward import causal_mask_or_none, model_logits, next_tokens, position_ids_from_mask
from ..rollout import sample_completion_rows
from ..training import TrainConfig, Trainer, option
from ..training.config import TokenizeConfig
from ..training.loop import pad_token_id_of


@dataclass
class DPOConfig(TrainConfig, TokenizeConfig):
    """DPO settings."""

    beta: float = option(0.1, "KL strength of the implied objective (IPO's tau)", bounds="(0, inf)")
    loss_type: str = option("sigmoid", "DPO-family loss (ipo: on summed log-probs; ipo-token-mean: on per-token "
                                       "means, as TRL's ipo)", choices=DPO_LOSS_TYPES)
    label_smoothing: float = option(0.0, "conservative DPO: assumed fraction of flipped labels (sigmoid only)",
                                    bounds="[0, 0.5)")
    precompute_ref_logprobs: bool = option(True, "reference log-probs once up front (then drop the reference)")


def sequence_logprobs(model_or_logits_fn, input_ids, attention_mask, loss_mask) -> torch.Tensor:
    """Sum of log pi(token) over the response tokens of each row. ``[N, T] -> [N]`` fp32.

    ``loss_mask[:, t]`` marks input position t as a response token; it is scored by the logits at t - 1.
    """
    # the collator right-pads every row: the causal mask alone serves (causal_mask_or_none), positions from the mask
    logits = model_logits(model_or_logits_fn, input_ids, causal_mask_or_none(attention_mask),
                          position_ids_from_mask(attention_mask))
    logp = token_logprobs(logits, next_tokens(input_ids))[:, :-1]  # no [N, T-1, V] copy of the logits
    return (logp * loss_mask[:, 1:]).sum(-1)


class DPOTrainer(Trainer):
    """Trains a causal LM on ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` pairs."""

    report_sampler = staticmethod(sample_completion_rows)

    name = "dpo"

    def __init__(self, config: DPOConfig, model, train_examples, eval_examples=None, tokenizer=None,
                 pad_token_id: int | None = None, reference=None):
        from ..data import PreferenceCollator

        pad = pad_token_id_of(pad_token_id, tokenizer, "DPOTrainer")
        with_margin = sum("margin" in ex for ex in (*train_examples, *(eval_examples or [])))
        if with_margin:
            raise ValueError(f"{with_margin} preference rows have a 'margin' column, which DPO has no term for (it "
                             "would be ignored): drop the column, or train a reward model on them, whose "
                             "Bradley-Terry loss uses it")
        self._collator = PreferenceCollator(pad)
        super().__init__(config, model, train_examples, eval_examples, tokenizer)
        from ..models.reference import make_reference

        self.reference = reference or make_reference(self.accelerator.unwrap_model(self.model))
        if config.precompute_ref_logprobs:
            used = self.batcher.indices_used(self.total_steps)  # only the pairs this run will train on
            self._attach_reference_logprobs([self.train_examples[i] for i in used], "train")
            self._attach_reference_logprobs(list(self.eval_examples or []), "eval")
            self.reference = None  # no longer needed: free its memory

    @torch.no_grad()
    def _attach_reference_logprobs(self, examples: list[dict], what: str) -> None:
        """Reference log-probs of ``examples`` (in their order, ``micro_batch_size`` pairs per forward, fewer where
        ``max_micro_batch_tokens`` cuts them), with a progress bar when ``progress`` is on."""
        size = self.config.micro_batch_size
        starts = range(0, len(examples), size)
        if self.config.progress and self.accelerator.is_main_process and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"reference log-probs ({what}, {len(examples)} pairs)", dynamic_ncols=True)
        for start in starts:
            chunk = examples[start : start + size]
            logps = [self._reference_logprobs(batch) for batch in self.collated_parts(chunk, self._collator)]
            chosen, rejected = (torch.cat(side).tolist() for side in zip(*logps, strict=True))
            for ex, c, r in zip(chunk, chosen, rejected, strict=True):
                ex["ref_chosen_logp"], ex["ref_rejected_logp"] = c, r

    def _reference_logprobs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        with torch.no_grad(), self.autocast():
            seq = sequence_logprobs(self.reference, batch["input_ids"].to(device),
                                    batch["attention_mask"].to(device), batch["loss_mask"].to(device))
        b = batch["num_pairs"]
        return seq[:b].float(), seq[b:].float()

    def sample_prompt_ids(self) -> list[list[int]]:
        return [list(ex["prompt_ids"]) for ex in self.sample_examples()]

    def count_units(self, examples: list[dict]) -> int:
        return len(examples)

    def collate(self, examples: list[dict]) -> dict:
        batch = self._collator(examples)
        if "ref_chosen_logp" in examples[0]:
            batch["ref_chosen_logp"] = torch.tensor([ex["ref_chosen_logp"] for ex in examples])
            batch["ref_rejected_logp"] = torch.tensor([ex["ref_rejected_logp"] for ex in examples])
        return batch

    def compute_loss(self, model, batch: dict, normalizer: float):
        device = self.accelerator.device
        seq = sequence_logprobs(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                batch["loss_mask"].to(device))
        b = batch["num_pairs"]
        if "ref_chosen_logp" in batch:
            ref_c, ref_r = batch["ref_chosen_logp"].to(device), batch["ref_rejected_logp"].to(device)
        else:
            ref_c, ref_r = self._reference_logprobs(batch)
        if self.config.loss_type in TOKEN_MEAN_LOSS_TYPES:  # sums -> per-token means of each response
            lengths = batch["loss_mask"][:, 1:].sum(-1).to(device).clamp(min=1).float()
            seq, ref_c, ref_r = seq / lengths, ref_c / lengths[:b], ref_r / lengths[b:]
        mean_loss, m = dpo_loss(seq[:b], seq[b:], ref_c, ref_r, beta=self.config.beta,
                                loss_type=self.config.loss_type, label_smoothing=self.config.label_smoothing)
        scale = b / normalizer
        metrics = {"loss": mean_loss.item() * scale, "rewards/chosen": m["rewards_chosen"] * scale,
                   "rewards/rejected": m["rewards_rejected"] * scale,
                   "rewards/accuracy": m["rewards_accuracy"] * scale, "rewards/margin": m["rewards_margin"] * scale,
                   "logps/chosen": m["logps_chosen"] * scale, "logps/rejected": m["logps_rejected"] * scale}
        return mean_loss * scale, metrics
