"""alignkit.models.reward / heads / padding: the score is read at the last real token, saved checkpoints load
in plain transformers with the same scores, the head starts at std 1/sqrt(d+1)."""

import math

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaForSequenceClassification,
)

from alignkit.models import (
    NORMALIZATION_KEY,
    RewardModel,
    gather_last,
    last_token_index,
    load_reward_model,
    position_ids_from_mask,
    reward_head_std,
)
from alignkit.models.tiny import build_tiny_llama, tiny_llama_config

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            max_position_embeddings=64)
PAD = 0


def _seqs(lengths=(5, 9, 1, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (n,), generator=g) for n in lengths]  # ids >= 3: never the pad id


def _pad(seqs, side, width=None):
    """[B, T] ids and mask, padded with PAD on ``side``."""
    width = width or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, span], mask[i, span] = s, 1
    return ids, mask


def _tiny_gpt2():
    """GPT-2 has learned absolute position embeddings: left padding is only harmless with the right positions."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, bos_token_id=1, eos_token_id=2, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def reward_model(request):
    lm = build_tiny_llama(seed=0, **TINY) if request.param == "llama" else _tiny_gpt2()
    torch.manual_seed(0)
    return RewardModel.from_causal_lm(lm, pad_token_id=PAD)


# ------------------------------------------------------------------------------------------ padding helpers
def test_last_token_index_and_positions_for_both_padding_sides():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4, 4]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2, 2, 2], [0, 0, 0, 1, 2], [0, 1, 2, 3, 4],
                                                     [0, 0, 0, 0, 0]]
    values = torch.arange(20.0).view(4, 5)
    assert gather_last(values, mask).tolist() == [2.0, 9.0, 14.0, 19.0]
    with pytest.raises(ValueError, match=r"rows \[1\] have no real token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


# ------------------------------------------------------------------------------------------ (b) padding side
def test_reward_is_read_at_the_last_real_token_whatever_the_padding(reward_model):
    seqs = _seqs()
    with torch.no_grad():
        right = reward_model(*_pad(seqs, "right"))
        left = reward_model(*_pad(seqs, "left"))
        wide = reward_model(*_pad(seqs, "left", width=12))  # extra padding changes nothing either
        single = torch.stack([reward_model(s[None], torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
    assert right.shape == (4,) and right.dtype == torch.float32
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)
    torch.testing.assert_close(wide, right, atol=1e-5, rtol=0)
    torch.testing.assert_close(single, right, atol=1e-5, rtol=0)
    assert right.std() > 1e-3  # the sequences really get different scores (the check is not vacuous)


def test_reward_ignores_tokens_after_the_last_real_one(reward_model):
    ids, mask = _pad(_seqs(), "right")
    noisy = torch.where(mask.bool(), ids, torch.randint_like(ids, 3, 97))  # junk (not pad ids) under the mask
    with torch.no_grad():
        torch.testing.assert_close(reward_model(noisy, mask), reward_model(ids, mask), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ (a) HF round trip
def test_saved_reward_model_loads_in_plain_transformers_with_the_same_scores(reward_model, tmp_path):
    reward_model.save_pretrained(tmp_path)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(hf) is type(reward_model.model) and hf.config.num_labels == 1
    ids, mask = _pad(_seqs(), "right")
    with torch.no_grad():
        ours = reward_model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)  # HF pools at the last id != pad
        again = load_reward_model(tmp_path)(ids, mask)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, ours, atol=1e-5, rtol=0)


def test_reward_models_saved_by_others_load_and_score_like_transformers(tmp_path):
    config = tiny_llama_config(**TINY)
    config.num_labels = 1
    torch.manual_seed(3)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "theirs")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "theirs")
    rm = load_reward_model(tmp_path / "theirs")
    ids, mask = _pad(_seqs(seed=1), "right")
    with torch.no_grad():
        torch.testing.assert_close(rm(ids, mask), hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1),
                                   atol=1e-5, rtol=0)

    config.num_labels = 2
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "two_labels")
    with pytest.raises(ValueError, match="num_labels=2"):
        load_reward_model(tmp_path / "two_labels")


def test_trunk_is_a_copy_of_the_causal_lm_and_saving_needs_a_pad_id(tmp_path):
    lm = build_tiny_llama(seed=2, **TINY)
    rm = RewardModel.from_causal_lm(lm, pad_token_id=5)
    ids = _seqs(lengths=(6,))[0][None]
    with torch.no_grad():
        h_lm = lm.model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(rm.hidden_states(ids, torch.ones_like(ids)), h_lm, atol=1e-6, rtol=0)
    assert rm.config.pad_token_id == 5
    assert rm.trunk.embed_tokens.weight.data_ptr() != lm.model.embed_tokens.weight.data_ptr()  # own weights

    rm.config.pad_token_id = rm.config.eos_token_id
    with pytest.warns(UserWarning, match="before a final EOS"):
        rm.save_pretrained(tmp_path / "pad_is_eos")
    rm.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id"):
        rm.save_pretrained(tmp_path / "no_pad")


# ------------------------------------------------------------------------------------------ (e) head init
def test_head_init_std_is_one_over_sqrt_d_plus_one():
    # d = 512 weights drawn from N(0, s^2): the sample std has relative standard error ~ 1/sqrt(2d) = 3.1%,
    # so a 15% tolerance is ~5 standard errors (false alarm ~1e-6; the init is seeded anyway). It cleanly
    # separates the intended s = 1/sqrt(513) = 0.0442 from transformers' default init (std 0.02, -55%) and
    # from a zero head. (1/sqrt(d) vs 1/sqrt(d+1) differ by 0.1%: no sample can tell, the formula test can.)
    d = 512
    torch.manual_seed(0)
    lm = build_tiny_llama(seed=0, vocab_size=16, hidden_size=d, num_layers=1, num_heads=4, intermediate_size=32)
    w = RewardModel.from_causal_lm(lm).head.weight
    assert w.shape == (1, d)
    assert reward_head_std(d) == 1 / math.sqrt(d + 1)
    assert abs(w.std().item() / reward_head_std(d) - 1) < 0.15
    assert abs(w.mean().item()) < 4 * reward_head_std(d) / math.sqrt(d)  # mean 0 within 4 standard errors


# ------------------------------------------------------------------------------------------ normalisation
def test_normalisation_is_applied_saved_and_ignored_by_plain_transformers(reward_model, tmp_path):
    ids, mask = _pad(_seqs(), "left")
    with torch.no_grad():
        raw = reward_model(ids, mask)
        assert reward_model.normalization == (0.0, 1.0)
        reward_model.set_normalization(mean=0.5, std=2.0)
        try:
            torch.testing.assert_close(reward_model(ids, mask), (raw - 0.5) / 2.0)
            torch.testing.assert_close(reward_model(ids, mask, normalize=False), raw)
            reward_model.save_pretrained(tmp_path)
        finally:
            reward_model.clear_normalization()
        loaded = load_reward_model(tmp_path)
        assert loaded.normalization == (0.5, 2.0)
        torch.testing.assert_close(loaded(ids, mask), (raw - 0.5) / 2.0, atol=1e-5, rtol=0)
        hf = AutoModelForSequenceClassification.from_pretrained(tmp_path)
        assert getattr(hf.config, NORMALIZATION_KEY) == {"mean": 0.5, "std": 2.0}

        mean, std = loaded.fit_normalization(raw)
        fitted = loaded(ids, mask)
    assert abs(fitted.mean().item()) < 1e-5 and abs(fitted.std(unbiased=False).item() - 1) < 1e-4
    with pytest.raises(ValueError, match="std > 0"):
        loaded.set_normalization(0.0, 0.0)
