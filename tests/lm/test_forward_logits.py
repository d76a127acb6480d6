"""forward_logits: the LM head over the last positions only gives the same logits as the full forward."""

import torch
from torch import nn

from alignkit.models import forward_logits, make_reference
from alignkit.models.forward import _takes_logits_to_keep, response_logprobs
from alignkit.models.tiny import build_tiny_llama


class _NoKeep(nn.Module):
    """A causal LM whose forward has no logits_to_keep (only **kwargs): the full logits are sliced."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.calls = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        self.calls.append(sorted(kwargs))
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)


def test_last_positions_equal_the_full_forward_with_and_without_logits_to_keep():
    torch.manual_seed(0)
    lm = build_tiny_llama(seed=0, vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    ids = torch.randint(3, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = forward_logits(lm, ids, mask, pos)
        assert _takes_logits_to_keep(type(lm)) and full.shape == (3, 9, 64)
        torch.testing.assert_close(forward_logits(lm, ids, mask, pos, keep_last=4), full[:, -4:], atol=1e-6, rtol=0)
        wrapped = _NoKeep(lm)
        assert not _takes_logits_to_keep(type(wrapped))
        torch.testing.assert_close(forward_logits(wrapped, ids, mask, pos, keep_last=4), full[:, -4:])
        assert wrapped.calls == [["use_cache"]]  # logits_to_keep was not passed to a forward that does not name it
        ref = make_reference(lm)
        torch.testing.assert_close(ref.logits(ids, mask, pos, keep_last=4), full[:, -4:], atol=1e-6, rtol=0)


def test_response_logprobs_match_a_full_forward_reference():
    torch.manual_seed(1)
    lm = build_tiny_llama(seed=1, vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    prompt = torch.randint(3, 64, (2, 5))
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    response = torch.randint(3, 64, (2, 4))
    response_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    ids, mask = torch.cat([prompt, response], 1), torch.cat([prompt_mask, response_mask], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logp_full = torch.log_softmax(lm(input_ids=ids, attention_mask=mask, position_ids=pos).logits, -1)
        expected = logp_full[:, 4:-1].gather(-1, response[..., None]).squeeze(-1) * response_mask
        got = response_logprobs(lm, prompt, prompt_mask, response, response_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_right_padded_batches_drop_the_mask_and_give_the_same_outputs_at_real_tokens():
    from alignkit.models import RewardModel
    from alignkit.models.forward import causal_mask_or_none, position_ids_from_mask

    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    holes = torch.tensor([[1, 0, 1, 1]])
    assert causal_mask_or_none(right) is None and causal_mask_or_none(torch.ones(2, 3)) is None
    assert causal_mask_or_none(left) is left and causal_mask_or_none(holes) is holes
    assert causal_mask_or_none(None) is None
    lm = build_tiny_llama(seed=0, vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    ids = torch.randint(3, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[1, 3:] = 0  # right padding of different lengths
    real = mask.bool()
    with torch.no_grad():
        with_mask = forward_logits(lm, ids, mask)
        dropped = forward_logits(lm, ids, causal_mask_or_none(mask), position_ids_from_mask(mask))
        torch.testing.assert_close(dropped[real], with_mask[real], atol=2e-5, rtol=0)
        rm = RewardModel.from_causal_lm(lm, pad_token_id=0)
        torch.testing.assert_close(rm.hidden_states(ids, mask, right_padded=True)[real],
                                   rm.hidden_states(ids, mask)[real], atol=2e-5, rtol=0)
        torch.testing.assert_close(rm(ids, mask, right_padded=True), rm(ids, mask), atol=2e-5, rtol=0)


def test_next_tokens_scores_like_the_shifted_slice():
    from alignkit.core.logprobs import token_logprobs
    from alignkit.models.forward import next_tokens

    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    assert next_tokens(ids)[:, :-1].equal(ids[:, 1:])
    torch.testing.assert_close(token_logprobs(logits, next_tokens(ids))[:, :-1],
                               token_logprobs(logits[:, :-1], ids[:, 1:]))
