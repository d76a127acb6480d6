"""alignkit.models.reference / lora: pi_ref is the base model and does not move when the policy trains."""

import pytest
import torch

from alignkit.core.logprobs import token_logprobs
from alignkit.models import (
    AdapterDisabledReference,
    FrozenReference,
    apply_lora,
    is_peft_model,
    load_causal_lm,
    make_reference,
    position_ids_from_mask,
)
from alignkit.models.tiny import build_tiny_llama

pytest.importorskip("peft")

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            max_position_embeddings=64)


def _batch(seed=0):
    """Left-padded [3, 8] ids and mask (rows of length 8, 5, 3)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _logprobs(model, ids, mask):
    """Next-token log-probs [B, T-1] of ``model``, the way a trainer computes the policy's."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    return token_logprobs(logits[:, :-1], ids[:, 1:]) * mask[:, 1:]


def test_lora_reference_with_adapter_disabled_equals_the_base_model():
    ids, mask = _batch()
    base = load_causal_lm(build_tiny_llama(seed=0, **TINY))
    with torch.no_grad():
        base_lp = _logprobs(base, ids, mask)

    policy = apply_lora(base, r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    assert is_peft_model(policy)
    n_params = sum(p.numel() for p in policy.parameters())
    with torch.no_grad():  # lora_B starts at 0 (adapted == base); make the adapter do something
        g = torch.Generator().manual_seed(1)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        adapted_lp = _logprobs(policy, ids, mask)
    assert (adapted_lp - base_lp).abs().max() > 1e-2, "the adapter must change the policy for the test to bite"

    policy.train()
    ref = make_reference(policy)
    assert isinstance(ref, AdapterDisabledReference)
    ref_lp = ref.logprobs(ids, mask)
    torch.testing.assert_close(ref_lp, base_lp, atol=1e-6, rtol=0)
    assert not ref_lp.requires_grad
    assert sum(p.numel() for p in policy.parameters()) == n_params  # no second copy of anything

    # the adapter is back on afterwards and the policy's train/eval flags are untouched
    assert policy.training and all(m.training for m in policy.modules())
    with torch.no_grad():
        torch.testing.assert_close(_logprobs(policy, ids, mask), adapted_lp, atol=1e-6, rtol=0)


def test_frozen_copy_does_not_change_when_the_policy_trains_a_step():
    ids, mask = _batch(seed=1)
    policy = load_causal_lm(build_tiny_llama(seed=0, **TINY))
    ref = make_reference(policy)
    assert isinstance(ref, FrozenReference) and ref.model is not policy
    assert not any(p.requires_grad for p in ref.model.parameters()) and not ref.model.training
    before = ref.logprobs(ids, mask)
    torch.testing.assert_close(before, _logprobs(policy, ids, mask).detach(), atol=1e-6, rtol=0)

    policy.train()
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    loss = -_logprobs(policy, ids, mask).sum()
    loss.backward()
    opt.step()
    with torch.no_grad():
        assert (_logprobs(policy, ids, mask) - before).abs().max() > 1e-2  # the policy moved
    assert torch.equal(ref.logprobs(ids, mask), before)  # the reference did not

    ref.model.train()  # even if someone flips the whole tree to train mode, pi_ref is evaluated in eval mode
    assert torch.equal(ref.logprobs(ids, mask), before)


def test_reference_logits_default_positions_and_kinds():
    ids, mask = _batch()
    policy = load_causal_lm(build_tiny_llama(seed=0, **TINY))
    ref = FrozenReference(policy)
    with torch.no_grad():
        explicit = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    torch.testing.assert_close(ref.logits(ids, mask), explicit, atol=1e-6, rtol=0)
    logp = ref.logprobs(ids, mask)  # [3, 7]: entry t scores token t+1; row 2's tokens 0..4 are padding
    assert logp.shape == (3, 7) and logp[2, :4].abs().sum() == 0 and (logp[2, 4:] < 0).all()
    with pytest.raises(TypeError, match="peft.PeftModel"):
        make_reference(policy, kind="disable_adapter")
    with pytest.raises(ValueError, match="kind must be one of"):
        make_reference(policy, kind="lora")
    with pytest.raises(ValueError, match="rank r must be > 0"):
        apply_lora(policy, r=0)
