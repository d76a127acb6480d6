"""The local judge: a causal LM held in memory compares or rates responses (see :mod:`.judge` for the rules)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from .judge import DEFAULT_RUBRIC, PAIRWISE_TEMPLATE, SCORE_TEMPLATE, Judge

__all__ = ["LocalLMJudge"]


class LocalLMJudge(Judge):
    """A causal LM in memory as the judge (any ``transformers`` causal LM and its tokenizer).

    Each label must be a single token of ``tokenizer``. When the template ends without whitespace (the
    default ends with ``"Preferred response:"``) the space-prefixed variant (``" A"``) is tried first,
    then the bare label; otherwise the other way round. A label that is neither is an error at
    construction. The model runs in eval mode (its previous mode is restored afterwards) under
    ``torch.no_grad``; prompts are left-padded here, whatever ``tokenizer.padding_side`` says (the
    tokenizer is not modified), with position ids counting real tokens only.

    Args:
        model: causal LM returning ``.logits`` ``[B, T, V]``; called with ``input_ids``,
            ``attention_mask``, ``position_ids`` (and ``logits_to_keep=1`` when it accepts it).
        tokenizer: its tokenizer (``encode``, ``convert_ids_to_tokens``, pad/eos/unk ids).
        batch_size: judge prompts per forward pass.
        add_special_tokens: passed to ``tokenizer.encode`` for the judge prompts (BOS for Llama).
        rubric, labels, template, score_labels, score_template, score_values: see :class:`Judge`.
    """

    def __init__(
        self,
        model,
        tokenizer,
        rubric: str = DEFAULT_RUBRIC,
        labels: Sequence[str] = ("A", "B"),
        template: str = PAIRWISE_TEMPLATE,
        *,
        score_labels: Sequence[str] | None = ("1", "2", "3", "4", "5"),
        score_template: str = SCORE_TEMPLATE,
        score_values: Sequence[float] | None = None,
        batch_size: int = 8,
        add_special_tokens: bool = True,
    ):
        super().__init__(rubric, labels, template, score_labels, score_template, score_values)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.add_special_tokens = batch_size, add_special_tokens
        self._token_ids: dict[tuple[str, ...], list[int]] = {
            self.labels: self._label_token_ids(self.labels, self.template, "labels")
        }
        if self.score_labels is not None:
            self._token_ids[self.score_labels] = self._label_token_ids(
                self.score_labels, self.score_template, "score_labels (pass score_labels=None to disable score mode)"
            )
        try:
            params = inspect.signature(model.forward).parameters
            self._keep_last = "logits_to_keep" in params
        except (TypeError, ValueError, AttributeError):
            self._keep_last = False

    def _label_token_ids(self, labels: tuple[str, ...], template: str, what: str) -> list[int]:
        tok = self.tokenizer
        spaced_first = not template[-1:].isspace()
        ids = []
        for label in labels:
            tried = []
            for variant in ([" " + label, label] if spaced_first else [label, " " + label]):
                enc = tok.encode(variant, add_special_tokens=False)
                if len(enc) == 1 and (tok.unk_token_id is None or enc[0] != tok.unk_token_id):
                    ids.append(enc[0])
                    break
                tried.append(f"{variant!r} -> {tok.convert_ids_to_tokens(enc)}")
            else:
                raise ValueError(
                    f"judge {what}: label {label!r} is not a single known token of this tokenizer "
                    f"({'; '.join(tried)}); choose labels that are single tokens"
                )
        if len(set(ids)) != len(ids):
            raise ValueError(f"judge {what}: labels {labels!r} map to the same token ids {ids}")
        return ids

    def label_probs(self, texts: list[str], labels: tuple[str, ...], where: list[str]) -> torch.Tensor:
        from alignkit.generation.base import left_pad
        from alignkit.models.forward import position_ids_from_mask

        label_ids = self._token_ids[labels]
        tok = self.tokenizer
        pad_id = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
        encoded = [tok.encode(t, add_special_tokens=self.add_special_tokens) for t in texts]
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        kwargs = {"logits_to_keep": 1} if self._keep_last else {}
        index = torch.tensor(label_ids, device=device)
        out = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(encoded), self.batch_size):
                    ids, mask = left_pad(encoded[start : start + self.batch_size], pad_id, device=device)
                    position_ids = position_ids_from_mask(mask)
                    logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kwargs).logits
                    # left padding: the last column is every row's last real token. [B, V] -> [B, K]
                    out.append(torch.softmax(logits[:, -1, :].index_select(-1, index).float(), dim=-1).cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(out)
