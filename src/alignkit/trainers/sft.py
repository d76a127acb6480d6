"""Supervised fine-tuning (behaviour cloning / instruction tuning).

Variant (seed 002 "Supervised Instruction Tuning", "Behavior Cloning"; Ouyang et al. 2022 step 1):
  * loss: negative log-likelihood of the completion tokens given the prompt,
        L = - sum_{t in completion} log pi(y_t | x, y_<t) / (number of completion tokens in the batch),
    i.e. a token mean over the *global* batch (every token weighs the same, however the batch is split);
  * completion-only by default: prompt tokens are masked (labels -100); ``completion_only_loss=False``
    trains on the whole sequence (language-model pre-training style);
  * an EOS token ends every completion, so the model learns to stop;
  * optional packing of several short examples per row (see ``alignkit.data.pack_sft``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.logprobs import token_logprobs
from ..models.forward import causal_mask_or_none, next_tokens
from ..rollout import sample_completion_rows
from ..training import TrainConfig, Trainer, option
from ..training.config import ChatTemplateConfig, TokenizeConfig
from ..training.loop import pad_token_id_of

IGNORE = -100


@dataclass
class SFTConfig(TrainConfig, TokenizeConfig, ChatTemplateConfig):
    """Supervised fine-tuning settings."""

    completion_only_loss: bool = option(True, "train on completion tokens only (prompt tokens masked)")
    packing: bool = option(False, "pack several examples into each row of max_length tokens")

    def tokenize_kwargs(self) -> dict:
        """:meth:`TokenizeConfig.tokenize_kwargs` plus how prompt/completion rows meet the chat template."""
        return {**super().tokenize_kwargs(), "chat_template": self.chat_template, "system_prompt": self.system_prompt}


class SFTTrainer(Trainer):
    """Token-level cross-entropy on the completion. Examples: ``{"input_ids": [...], "labels": [...]}``."""

    report_sampler = staticmethod(sample_completion_rows)

    name = "sft"

    def __init__(self, config: SFTConfig, model, train_examples, eval_examples=None, tokenizer=None,
                 pad_token_id: int | None = None):
        from ..data import SFTCollator, pack_sft

        pad = pad_token_id_of(pad_token_id, tokenizer, "SFTTrainer")
        self._collator = SFTCollator(pad)
        self._sample_source = eval_examples or train_examples  # before packing: whole prompts
        if config.packing:
            train_examples = pack_sft(train_examples, config.max_length)
            eval_examples = pack_sft(eval_examples, config.max_length) if eval_examples else eval_examples
        super().__init__(config, model, train_examples, eval_examples, tokenizer)

    def sample_examples(self) -> list[dict]:
        return self._sample_source[: self.config.num_samples]  # as tokenised, before packing

    def sample_prompt_ids(self) -> list[list[int]]:
        """The prompt part (labels masked) of the first held-out (else training) examples."""
        prompts = []
        for ex in self.sample_examples():
            start = next((t for t, y in enumerate(ex["labels"]) if y != IGNORE), 0)
            if start:  # no prompt when completion_only_loss=False: nothing to condition on
                prompts.append(list(ex["input_ids"][:start]))
        return prompts

    def count_units(self, examples: list[dict]) -> int:
        # labels[0] is never predicted (no context); count the shifted targets
        return sum(sum(1 for y in ex["labels"][1:] if y != IGNORE) for ex in examples)

    def collate(self, examples: list[dict]) -> dict:
        return self._collator(examples)

    def compute_loss(self, model, batch: dict, normalizer: float):
        device = self.accelerator.device
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        labels = batch["labels"].to(device)
        if "position_ids" in batch:
            # packed rows: restarting position ids with *no* attention mask and no KV cache make transformers
            # build a block-diagonal causal mask, so packed examples do not see each other (see pack_sft)
            logits = model(input_ids=ids, position_ids=batch["position_ids"].to(device), use_cache=False).logits
        else:
            logits = model(input_ids=ids, attention_mask=causal_mask_or_none(mask)).logits
        targets = labels[:, 1:]
        valid = targets != IGNORE
        logp = token_logprobs(logits, next_tokens(labels.clamp(min=0)))[:, :-1]  # [B, T-1], no copy of the logits
        nll_sum = -(logp * valid).sum()
        loss = nll_sum / normalizer
        n_tok = valid.sum()
        metrics = {"loss": loss.item(), "tokens": float(n_tok)}
        return loss, metrics

