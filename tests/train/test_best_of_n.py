"""Best-of-N: the KL bound by hand, the n/(n+1) win rate on a continuous reward, selection and ties, the SFT
dataset round trip, and the errors."""

import hashlib
import math
import random

import pytest
import torch

from alignkit.data import load_rows, tokenize_sft
from alignkit.generation import Completions, KVCacheGenerator, SamplingParams
from alignkit.models.tiny import build_tiny_llama, build_tokenizer
from alignkit.rewards import InvalidRewardError
from alignkit.trainers.best_of_n import BestOfNConfig, best_of_n, continuous_win_rate, kl_bound

# 100 words + 4 specials: a random tiny model samples nearly uniformly from ~104 tokens, so two 8-token
# completions coincide with probability ~104^-8 and the hash reward below has (almost surely) no ties.
WORDS = [f"w{i}" for i in range(100)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are far too small to gain from intra-op threads; on a loaded machine the threads'
    spin-waiting made this file ~6x slower (47 s instead of 8 s measured on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer([" ".join(WORDS)] * 3, vocab_size=128, model="word")


@pytest.fixture(scope="module")
def generator(tok):
    model = build_tiny_llama(seed=0, vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=64, max_position_embeddings=64)
    return KVCacheGenerator(model, tok.eos_token_id, tok.pad_token_id)


def _prompts(k, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(k)]


def hash_reward(prompts, completions):
    """A continuous reward in [0, 1): sha256 of (prompt, completion) as a fraction. Stable across runs."""
    return [int(hashlib.sha256(f"{p}\x00{c}".encode()).hexdigest(), 16) / 2**256
            for p, c in zip(prompts, completions, strict=True)]


def test_kl_bound_hand_values():
    assert kl_bound(1) == 0.0  # log 1 - 0/1 = 0: best-of-1 is the policy itself
    assert kl_bound(2) == pytest.approx(0.1931, abs=1e-4)  # log 2 - 1/2 = 0.693147 - 0.5 = 0.193147
    assert kl_bound(4) == pytest.approx(0.6363, abs=1e-4)  # log 4 - 3/4 = 1.386294 - 0.75 = 0.636294
    assert kl_bound(16) == pytest.approx(math.log(16) - 15 / 16)
    assert continuous_win_rate(4) == 0.8  # 4 / (4 + 1)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            kl_bound(bad)


@pytest.mark.parametrize("n, expected, tol", [
    # 2000 prompts: SE = sqrt(0.8 * 0.2 / 2000) = 0.0089, tolerance 0.03 ~ 3.4 SE. Pitting the best against one
    # of its own n candidates instead would give (n-1)/n + 1/(2n) = 0.875 (a tie with itself 1/n of the time),
    # 8 SE away: caught (200 prompts, SE 0.028, could not tell 0.8 from 0.875 reliably).
    (4, 0.8, 0.03),
    # SE = sqrt(0.5 * 0.5 / 2000) = 0.0112, tolerance 0.04 ~ 3.6 SE
    (1, 0.5, 0.04),
])
def test_win_rate_against_one_sample_is_close_to_n_over_n_plus_1(tok, generator, n, expected, tol):
    """Best-of-N with continuous rewards: win rate against one independent sample close to n/(n+1)."""
    prompts = _prompts(2000)
    cfg = BestOfNConfig(n=n, max_new_tokens=8, min_new_tokens=8, temperature=1.0, seed=0, batch_size=500)
    result = best_of_n(prompts, tok, generator, hash_reward, cfg)
    assert result.all_scores.shape == (2000, n) and result.single_scores.shape == (2000,)
    # the samples are diverse enough for the reward to be continuous: no ties between best and single
    assert len(set(result.single_completions)) == 2000
    assert int((result.scores == result.single_scores).sum()) == 0
    assert abs(result.win_rate - expected) < tol, result.win_rate  # measured: 0.8105 (n=4), 0.5045 (n=1)
    summary = result.summary()
    assert summary["kl_bound"] == kl_bound(n) and summary["win_rate_continuous"] == expected
    # rewards ~ U[0, 1): E[one score] = 1/2, SE = sqrt(1/12 / 2000) = 0.0065; over all 2000 n scores <= 0.0065
    assert summary["mean_single_score"] == pytest.approx(0.5, abs=0.025)
    assert summary["mean_sample_score"] == pytest.approx(0.5, abs=0.025)
    if n == 4:
        # E[max of 4 uniforms] = 4/5; Var = 4 / (5^2 * 6) = 0.0267, SE = sqrt(0.0267 / 2000) = 0.0037
        assert summary["mean_best_score"] == pytest.approx(0.8, abs=0.02)
    else:
        assert torch.equal(result.scores, result.all_scores[:, 0])  # best of 1 is the one sample


class ScriptedGenerator:
    """A Generator that answers prompt i with the token lists ``script(i)`` (no model), to test selection."""

    def __init__(self, script, pad_id=0, eos_id=2):
        self.script, self.pad_id, self.eos_id, self.calls = script, pad_id, eos_id, []

    def generate(self, prompts, sampling: SamplingParams) -> Completions:
        self.calls.append((len(prompts), sampling))
        width = max(len(p) for p in prompts)
        ids, resp = [], []
        for p in prompts:
            outs = self.script(p, sampling.n)
            assert len(outs) == sampling.n
            for o in outs:
                ids.append([self.pad_id] * (width - len(p)) + p)
                resp.append(o + [self.eos_id])
        r = max(len(x) for x in resp)
        response = torch.tensor([x + [self.pad_id] * (r - len(x)) for x in resp])
        mask = torch.tensor([[1] * len(x) + [0] * (r - len(x)) for x in resp])
        ids = torch.tensor(ids)
        return Completions(ids, (ids != self.pad_id).long(), response, mask, torch.zeros(response.shape),
                           torch.ones(len(resp), dtype=torch.bool),
                           torch.arange(len(prompts)).repeat_interleave(sampling.n))

    def update_weights(self, model=None):
        pass


def test_keeps_the_best_first_on_ties_and_passes_columns(tok):
    w = tok.convert_tokens_to_ids
    # every prompt gets the candidates w1, w2, w2, w0 (and w0 as the extra independent sample)
    gen = ScriptedGenerator(lambda p, m: [[w("w1")], [w("w2")], [w("w2")], [w("w0")], [w("w0")]][:m])
    seen = {}

    def reward(prompts, completions, bonus):
        seen.setdefault("bonus", []).extend(bonus)
        return [float(c[1:]) + b for c, b in zip(completions, bonus, strict=True)]  # "w2" -> 2.0 (+ bonus)

    prompts = ["w5 w6", "w7", "w8 w9 w10"]
    result = best_of_n(prompts, tok, gen, reward, BestOfNConfig(n=4, batch_size=2), columns={"bonus": [0, 10, 0]})
    assert [c for c, _ in gen.calls] == [2, 1] and all(s.n == 5 for _, s in gen.calls)
    # each generate call has its own noise: keyed by the global index of its first prompt
    assert [s.first_prompt_index for _, s in gen.calls] == [0, 2]
    assert seen["bonus"] == [0] * 5 + [10] * 5 + [0] * 5  # per-prompt column repeated per sample
    assert result.completions == ["w2"] * 3
    assert result.best_index.tolist() == [1, 1, 1]  # w2 twice: the first of the tied pair
    assert result.scores.tolist() == [2.0, 12.0, 2.0]
    assert result.all_scores[1].tolist() == [11.0, 12.0, 12.0, 10.0]
    assert result.all_completions[0] == ["w1", "w2", "w2", "w0"] and result.single_completions == ["w0"] * 3
    assert result.win_rate == 1.0 and result.mean_single_score == pytest.approx(10 / 3)
    # a reward that cannot tell the completions apart: all ties -> the first candidate, win rate exactly 1/2
    flat = best_of_n(prompts, tok, gen, lambda p, c: [1.0] * len(c), BestOfNConfig(n=4))
    assert flat.best_index.tolist() == [0, 0, 0] and flat.win_rate == 0.5
    # without the win rate no extra sample is drawn
    off = best_of_n(prompts, tok, gen, reward, BestOfNConfig(n=4, measure_win_rate=False),
                    columns={"bonus": [0, 0, 0]})
    assert gen.calls[-1][1].n == 4 and off.win_rate is None and "win_rate" not in off.summary()
    assert off.completions == ["w2"] * 3


def test_sft_jsonl_round_trips_through_load_rows_and_tokenize_sft(tok, generator, tmp_path):
    path = tmp_path / "out" / "bon.jsonl"
    cfg = BestOfNConfig(n=3, max_new_tokens=6, min_new_tokens=1, batch_size=4, output_path=str(path))
    result = best_of_n(_prompts(10, seed=1), tok, generator, hash_reward, cfg)
    rows = load_rows(str(path), format="prompt_completion")
    assert rows == result.to_sft_rows() and len(rows) == 10
    assert [r["completion"] for r in rows] == result.completions
    assert [r["prompt"] for r in rows] == result.prompts
    assert result.stats["sft_rows_skipped_empty"] == 0
    examples = tokenize_sft(rows, tok, max_length=32)
    assert len(examples) == 10
    for ex, row in zip(examples, rows, strict=True):
        completion = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ex["labels"][-len(completion):] == completion  # the chosen completion is the SFT target


def test_empty_completion_is_left_out_of_the_sft_rows_and_counted(tok, tmp_path):
    w = tok.convert_tokens_to_ids
    gen = ScriptedGenerator(lambda p, m: [[], [w("w3")], [w("w3")]][:m])  # the empty completion wins below
    result = best_of_n(["w1", "w2"], tok, gen, lambda p, c: [0.0 if c else 1.0 for c in c], BestOfNConfig(n=2))
    assert result.completions == ["", ""]
    assert result.write_jsonl(tmp_path / "x.jsonl") == 0 and result.stats["sft_rows_skipped_empty"] == 2


def test_nan_reward_raises_naming_the_prompt_index(tok, generator):
    prompts = _prompts(6, seed=2)

    def reward(ps, cs):
        return [float("nan") if p == prompts[3] else 0.5 for p in ps]

    cfg = BestOfNConfig(n=2, max_new_tokens=4, batch_size=2)  # prompt 3 is the 2nd of the 2nd generate call
    with pytest.raises(InvalidRewardError, match=r"reward for prompt index 3 \(sample 1 of 3\) is NaN") as err:
        best_of_n(prompts, tok, generator, reward, cfg)
    assert err.value.index == 3 and repr(prompts[3]) in str(err.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n .* must be an integer >= 1"),
    ({"n": 2.5}, "n .* must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size"),
    ({"temperature": 0.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_prompt_length": -1}, "max_prompt_length"),
    ({"prompt_truncation": "right"}, "prompt_truncation"),
])
def test_bad_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BestOfNConfig(**kwargs)


def test_bad_inputs_error(tok, generator):
    cfg = BestOfNConfig(n=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="no prompts"):
        best_of_n([], tok, generator, hash_reward, cfg)
    with pytest.raises(ValueError, match="column 'answer' must have one value per prompt"):
        best_of_n(["w1", "w2"], tok, generator, hash_reward, cfg, columns={"answer": ["a"]})
    with pytest.raises(ValueError, match="prompt 1 has 3 tokens"):
        best_of_n(["w1", "w1 w2 w3"], tok, generator, hash_reward,
                  BestOfNConfig(n=2, max_prompt_length=2, prompt_truncation="error", chat_template="off"))


def test_sampling_and_scoring_show_progress_unless_asked_not_to(tok, generator, capsys):
    """Best-of-N's generation and scoring is the long phase: a progress bar over its batches (off with
    progress=False), and the same result either way."""
    prompts = _prompts(6)
    shown = best_of_n(prompts, tok, generator, hash_reward, BestOfNConfig(n=2, batch_size=2, max_new_tokens=4))
    assert "best-of-2: sample and score 6 prompts" in capsys.readouterr().err
    quiet = best_of_n(prompts, tok, generator, hash_reward, BestOfNConfig(n=2, batch_size=2, max_new_tokens=4,
                                                                         progress=False))
    assert "best-of-2" not in capsys.readouterr().err
    assert quiet.completions == shown.completions and torch.equal(quiet.scores, shown.scores)
