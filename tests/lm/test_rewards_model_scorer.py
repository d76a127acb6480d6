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
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):  # the training format: EOS appended
        ids = torch.tensor([tok(p)["input_ids"] + tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
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
    with pytest.raises(ValueError, match="prompt 1: .* 6 tokens"):  # 5 + EOS
        scorer(["the", "the cat"], [" cat", " sat on the"])
    assert len(RewardModelScorer(rm, tok, max_length=3, truncation="left")(["the cat"], [" sat on the"])) == 1


def test_a_trained_reward_model_scores_a_training_pair_as_the_trainer_saw_it(scorer_parts, tmp_path):
    """One format for training and scoring: the trainer's forward on a collated training pair and the scorer on
    the same texts give the same rewards (the scorer used to join the texts and leave out the EOS that every
    training response ends with: 4.43 vs 1.76 on SmolLM2)."""
    from alignkit.data import PreferenceCollator, load_rows, tokenize_preferences
    from alignkit.trainers import RewardConfig, RewardTrainer

    rm, tok = scorer_parts
    rows = [{"prompt": "the cat", "chosen": " sat on the mat", "rejected": " ran far away"},
            {"prompt": "the dog", "chosen": " ran far", "rejected": " sat"}] * 4
    examples = tokenize_preferences(load_rows(rows), tok, max_length=32)
    cfg = RewardConfig(output_dir=str(tmp_path), batch_size=4, max_steps=2, learning_rate=1e-2, progress=False,
                       tensorboard=False, num_samples=0)
    RewardTrainer(cfg, rm, examples, tokenizer=tok).train()
    batch = PreferenceCollator(tok.pad_token_id)(list(examples[:2]))
    with torch.no_grad():
        trained = rm(batch["input_ids"], batch["attention_mask"])
    responses = [r["chosen"] for r in rows[:2]] + [r["rejected"] for r in rows[:2]]
    scored = RewardModelScorer(rm, tok, normalize=False)([r["prompt"] for r in rows[:2]] * 2, responses)
    torch.testing.assert_close(torch.tensor(scored), trained.float(), atol=1e-5, rtol=1e-5)
