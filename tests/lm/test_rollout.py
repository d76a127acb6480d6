import copy

import pytest
import torch

from alignkit.generation import KVCacheGenerator, SamplingParams
from alignkit.models.tiny import build_tiny_llama, build_tokenizer
from alignkit.rollout import collect_rollout

WORDS = "the cat sat on a mat dog ran far away good bad yes no".split()


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer([" ".join(WORDS)] * 4, vocab_size=64, model="word")
    model = build_tiny_llama(seed=1, vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=64, max_position_embeddings=64)
    return tok, model


def count_good(prompts, completions, **columns):
    return [float(c.split().count("good")) for c in completions]


def test_rollout_fields_and_consistency(setup):
    tok, model = setup
    gen = KVCacheGenerator(model, tok.eos_token_id, tok.pad_token_id)
    prompts = ["the cat sat", "a dog ran far away"]
    seen = {}

    def reward(prompts, completions, target):
        seen["target"] = target
        return [1.0] * len(completions)

    ro = collect_rollout(prompts, tok, gen, reward, model, SamplingParams(max_new_tokens=6, n=3, seed=0),
                         reference=copy.deepcopy(model), critic=lambda ids, m, p: ids.float() * 0.5,
                         columns={"target": ["x", "y"]})
    assert len(ro) == 6 and ro.prompts == [prompts[0]] * 3 + [prompts[1]] * 3
    assert seen["target"] == ["x"] * 3 + ["y"] * 3
    torch.testing.assert_close(ro.logprobs, ro.sampler_logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(ro.ref_logprobs, ro.logprobs)  # reference = identical copy
    # V(s_t) read at position P - 1 + t: the critic here returns 0.5 * token id of that position
    p = ro.prompt_ids.shape[1]
    expected = (ro.input_ids[:, p - 1 : -1].float() * 0.5) * ro.response_mask
    torch.testing.assert_close(ro.values, expected)
    for key in ("time/generate_s", "time/score_s", "time/policy_logprobs_s", "eos_rate", "response_length_mean"):
        assert key in ro.stats
    sub = ro.select([1, 4])
    assert sub.prompts == [prompts[0], prompts[1]] and sub.response_ids.shape[0] == 2


def test_missing_eos_penalty_replaces_score(setup):
    tok, model = setup
    gen = KVCacheGenerator(model, tok.eos_token_id, tok.pad_token_id)
    ro = collect_rollout(["the cat"], tok, gen, lambda p, c: [5.0] * len(c), model,
                         SamplingParams(max_new_tokens=2, n=8, seed=1), missing_eos_penalty=-1.0)
    assert (ro.raw_scores == 5.0).all()
    torch.testing.assert_close(ro.scores, torch.where(ro.finished, 5.0, -1.0))
    assert (~ro.finished).any()  # two tokens rarely end a random model's reply: the penalty is exercised


def test_bad_rewards_and_prompts_are_named(setup):
    tok, model = setup
    gen = KVCacheGenerator(model, tok.eos_token_id, tok.pad_token_id)
    sp = SamplingParams(max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="expected 2"):
        collect_rollout(["the cat", "a dog"], tok, gen, lambda p, c: [1.0], model, sp)
    with pytest.raises(ValueError, match="index 1"):
        collect_rollout(["the cat", "a dog"], tok, gen, lambda p, c: [1.0, float("nan")], model, sp)
    with pytest.raises(ValueError, match="prompt 1 has 5 tokens"):
        collect_rollout(["the", "the cat sat on a"], tok, gen, count_good, model, sp, max_prompt_length=3,
                        prompt_truncation="error")
    ro = collect_rollout(["the", "the cat sat on a"], tok, gen, count_good, model, sp, max_prompt_length=3)
    assert ro.stats["prompts_truncated"] == 1.0 and ro.prompt_mask.sum(-1).max() == 3
