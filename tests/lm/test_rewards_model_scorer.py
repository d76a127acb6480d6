import pytest
import torch

from alignkit.models import RewardModel
from alignkit.models.tiny import build_tiny_llama, build_tokenizer
from alignkit.rewards import RewardModelScorer, call_reward_fn


@pytest.fixture(scope="module")
def scorer_parts():
    tok = build_tokenizer(["the cat sat on the mat and the dog ran far away"] * 3, vocab_size=40, model="word")
    lm = build_tiny_llama(seed=2, vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                          intermediate_size=64, max_position_embeddings=64)
    return RewardModel.from_causal_lm(lm, pad_token_id=tok.pad_token_id), tok


def test_scores_match_unbatched_forward_and_are_a_reward_fn(scorer_parts):
    rm, tok = scorer_parts
    scorer = RewardModelScorer(rm, tok, batch_size=2)
    prompts = ["the cat", "a dog ran", "the", "sat on"]
    completions = [" sat on the mat", " far", " dog ran far away", " the"]
    got = call_reward_fn(scorer, prompts, completions)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids = torch.tensor([tok(p + c)["input_ids"]])
        with torch.no_grad():
            ref = rm(ids, torch.ones_like(ids)).item()
        assert got[i].item() == pytest.approx(ref, abs=1e-5)


def test_normalization_fit_on_reference_samples(scorer_parts):
    rm, tok = scorer_parts
    scorer = RewardModelScorer(rm, tok)
    prompts = ["the cat"] * 6
    completions = [" sat", " ran far", " on the mat", " dog", " the dog ran", " away"]
    try:
        scorer.fit_normalization(prompts, completions)
        scores = torch.tensor(scorer(prompts, completions))
        assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
        assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    finally:
        rm.clear_normalization()


def test_too_long_is_named(scorer_parts):
    rm, tok = scorer_parts
    scorer = RewardModelScorer(rm, tok, max_length=3)
    with pytest.raises(ValueError, match="prompt 1: .* 5 tokens"):
        scorer(["the", "the cat"], [" cat", " sat on the"])
    assert len(RewardModelScorer(rm, tok, max_length=3, truncation="left")(["the cat"], [" sat on the"])) == 1
