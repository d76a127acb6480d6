"""alignkit.models.value: per-token values [B, T]; the shared-trunk head leaves the policy's logits alone."""

import torch

from alignkit.models import PolicyWithValueHead, RewardModel, ValueModel, gather_last, load_causal_lm
from alignkit.models.tiny import build_tiny_llama

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            max_position_embeddings=64)


def _batch(seed=0):
    """Right-padded [3, 7] ids and mask (rows of length 7, 4, 2)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def test_value_model_gives_a_value_per_token_and_zero_on_padding():
    ids, mask = _batch()
    lm = build_tiny_llama(seed=0, **TINY)
    critic = ValueModel.from_causal_lm(lm)
    with torch.no_grad():
        values = critic(ids, mask)
    assert values.shape == (3, 7) and values.dtype == torch.float32
    assert torch.equal(values, torch.zeros(3, 7))  # zero-initialised head (lm-human-preferences)

    critic = ValueModel.from_causal_lm(lm, head_init_std=0.1)
    with torch.no_grad():
        values = critic(ids, mask)
    assert (values[mask.bool()] != 0).all() and (values[~mask.bool()] == 0).all()


def test_value_model_from_reward_model_copies_trunk_and_head(tmp_path):
    ids, mask = _batch(seed=1)
    torch.manual_seed(0)
    rm = RewardModel.from_causal_lm(build_tiny_llama(seed=1, **TINY))
    rm.set_normalization(1.0, 3.0)
    critic = ValueModel.from_reward_model(rm)
    with torch.no_grad():
        # the critic's value at the last real token is the (raw) reward: V is initialised to predict r
        torch.testing.assert_close(gather_last(critic(ids, mask), mask), rm(ids, mask, normalize=False),
                                   atol=1e-5, rtol=0)
        critic.head.weight.add_(1.0)  # independent weights: training the critic leaves the reward alone
        assert not torch.allclose(gather_last(critic(ids, mask), mask), rm(ids, mask, normalize=False))
    assert critic.head.weight.requires_grad

    critic.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(ValueModel.from_pretrained(tmp_path)(ids, mask), critic(ids, mask),
                                   atol=1e-5, rtol=0)


def test_policy_with_value_head_returns_the_plain_policy_logits(tmp_path):
    ids, mask = _batch(seed=2)
    policy = load_causal_lm(build_tiny_llama(seed=2, **TINY))
    torch.manual_seed(0)
    model = PolicyWithValueHead(policy, head_init_std=0.1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        hidden = policy.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    out = model(ids, mask)
    assert out.logits.shape == (3, 7, 97) and out.values.shape == (3, 7)
    torch.testing.assert_close(out.logits, plain, atol=1e-6, rtol=0)
    expected = model.value_head(hidden).squeeze(-1) * mask  # the head reads the final (post-norm) hidden state
    torch.testing.assert_close(out.values, expected, atol=1e-6, rtol=0)

    # one backward reaches both the head and the shared trunk
    (out.values.sum() + out.logits.mean()).backward()
    assert model.value_head.weight.grad.abs().sum() > 0
    assert policy.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0

    model.save_pretrained(tmp_path)
    loaded = PolicyWithValueHead.from_pretrained(tmp_path)
    with torch.no_grad():
        again = loaded(ids, mask)
    torch.testing.assert_close(again.values, out.values.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(again.logits, plain, atol=1e-6, rtol=0)
