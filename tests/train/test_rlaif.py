"""Offline RLAIF: policy samples -> AI judge labels -> preference rows -> reward model / DPO.

The judge of the main test is a real :class:`LocalLMJudge` (templates, label tokens, left padding, both
orders) over a stand-in LM whose label logits follow a rule: "the response containing MARKER is better".
The policy is a random tiny Llama whose vocabulary contains MARKER, so the rule decides some sampled pairs
and not others; the test checks that the labels reproduce the rule on every pair it decides.
"""

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from alignkit.data import load_rows
from alignkit.generation import Completions, KVCacheGenerator
from alignkit.models import RewardModel
from alignkit.models.tiny import build_tokenizer
from alignkit.rewards import PAIRWISE_TEMPLATE, LocalLMJudge
from alignkit.trainers.dpo import DPOConfig
from alignkit.trainers.reward_model import RewardConfig
from alignkit.trainers.rlaif import AILabels, RLAIFConfig, label_pairs_with_judge, train_on_ai_labels

from . import tasks

MARKER = "good"  # a word of the policy's vocabulary (tasks.WORDS); prompts never contain it
RUBRIC = f"Prefer the response that contains the word {MARKER}."


def _has(text: str) -> bool:
    return MARKER in text.split()


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# P(marked response better) when exactly one is marked: p_AB = s(2 + 1 - 0), p_BA = s(1 - 2) (see RuleLM)
RULE_WIN = 0.5 * (_sigmoid(3.0) + 1.0 - _sigmoid(-1.0))  # = 0.842


class RuleLM(torch.nn.Module):
    """A stand-in causal LM for the judge whose label logits follow the rule, with a position bias:

        z_A = 2 [MARKER in response A] + 1,     z_B = 2 [MARKER in response B]     (last position)

    Response A is read between the words "A:" and "B:" of the pairwise template, B between "B:" and "Which".
    """

    def __init__(self, tok):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.vocab = len(tok)
        self.id = {w: tok.convert_tokens_to_ids(w) for w in ("A:", "B:", "Which", "A", "B", MARKER)}
        assert tok.unk_token_id not in self.id.values(), self.id
        self.rows_seen = 0

    def forward(self, input_ids, attention_mask, position_ids):
        assert not torch.is_grad_enabled() and attention_mask[:, -1].all()  # no grad, left-padded
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for r in range(input_ids.shape[0]):
            ids = input_ids[r][attention_mask[r].bool()].tolist()
            a = ids[ids.index(self.id["A:"]) + 1 : ids.index(self.id["B:"])]
            b = ids[ids.index(self.id["B:"]) + 1 : ids.index(self.id["Which"])]
            logits[r, -1, self.id["A"]] = 2.0 * (self.id[MARKER] in a) + 1.0
            logits[r, -1, self.id["B"]] = 2.0 * (self.id[MARKER] in b)
        self.rows_seen += input_ids.shape[0]
        return SimpleNamespace(logits=logits)


def _prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [tasks._sentence(rng, rng.randint(2, 4)) for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
    return tasks.tokenizer()


@pytest.fixture(scope="module")
def rule_judge():
    """LocalLMJudge over RuleLM; its word-level tokenizer knows the template's words and the policy's."""
    template_text = PAIRWISE_TEMPLATE.format(rubric=RUBRIC, prompt="p", response_a="x", response_b="y",
                                             label_a="A", label_b="B")
    judge_tok = build_tokenizer([template_text, " ".join(tasks.WORDS), "A B"], vocab_size=200, model="word")
    return LocalLMJudge(RuleLM(judge_tok), judge_tok, RUBRIC, score_labels=None, batch_size=16)


@pytest.fixture(scope="module")
def rule_labels(tok, rule_judge):
    """64 prompts, one pair each, from a random tiny Llama at temperature 1, labelled by the rule judge."""
    policy = tasks.model(tok, seed=0)
    generator = KVCacheGenerator(policy, tok.eos_token_id, tok.pad_token_id)
    config = RLAIFConfig(max_new_tokens=8, seed=0, generation_batch_size=32, judge_batch_size=16)
    return label_pairs_with_judge(_prompts(64), tok, generator, rule_judge, config)


# ---- the rule is reproduced ------------------------------------------------------------------------


def test_a_judge_whose_rubric_matches_a_rule_reproduces_the_rules_preferences(rule_labels, rule_judge):
    labels = rule_labels
    c = labels.counts
    assert c["pairs"] + c["dropped_identical"] + c["dropped_empty"] + c["dropped_low_confidence"] == 64
    assert len(labels.rows) + len(labels.dropped) == labels.pairs_requested == 64
    assert rule_judge.model.rows_seen == 2 * (64 - c["dropped_identical"] - c["dropped_empty"])  # both orders

    # every kept pair is one the rule decides, and the judge chose the marked response every time
    decidable = [r for r in labels.rows if _has(r["chosen"]) != _has(r["rejected"])]
    agree = [r for r in decidable if _has(r["chosen"])]
    print(f"\nRLAIF rule judge: {len(agree)}/{len(decidable)} decidable pairs agree; counts {c}")
    assert len(decidable) >= 10, c
    assert len(agree) == len(decidable) == len(labels.rows)
    assert [r["judge_prob"] for r in labels.rows] == pytest.approx([RULE_WIN] * len(labels.rows), abs=1e-6)
    assert c["mean_confidence"] == pytest.approx(RULE_WIN, abs=1e-6)
    # ... and every pair it does not decide (both or neither marked) was a tie: dropped, counted, not guessed
    ties = [d for d in labels.dropped if d["reason"] == "low_confidence"]
    assert ties and all(_has(d["response_a"]) == _has(d["response_b"]) for d in ties)
    assert all(d["judge_prob"] == pytest.approx(0.5, abs=1e-7) for d in ties)
    assert c["dropped_low_confidence"] == len(ties)
    # the rows are valid preference data, each tied to its prompt
    rows = labels.to_rows()
    assert rows.format == "preference" and len(rows) == len(labels.rows)
    prompts = _prompts(64)
    assert all(r["prompt"] == prompts[r["prompt_index"]] for r in labels.rows)


def test_reward_model_learns_the_ai_labels(rule_labels, tok, tmp_path):
    torch.manual_seed(0)  # the new reward head is drawn from the global RNG
    rm = RewardModel.from_causal_lm(tasks.model(tok, seed=1), pad_token_id=tok.pad_token_id)
    cfg = RewardConfig(output_dir=str(tmp_path), batch_size=8, max_steps=12, learning_rate=3e-3,
                       lr_scheduler="constant", max_length=32, progress=False, tensorboard=False)
    trainer = train_on_ai_labels(rule_labels, tok, rm, "reward", cfg, eval_labels=rule_labels, train=False)
    before = trainer.evaluate()
    history = trainer.train()
    after = trainer.evaluate()
    print(f"\nreward model on AI labels: accuracy {before['eval/accuracy']:.2f} -> {after['eval/accuracy']:.2f}, "
          f"loss {before['eval/loss']:.3f} -> {after['eval/loss']:.3f}")
    assert len(history) == 12 and all(math.isfinite(h["loss"]) for h in history)
    assert after["eval/loss"] < before["eval/loss"]
    assert after["eval/accuracy"] >= 0.9 and after["eval/accuracy"] > before["eval/accuracy"], (before, after)


def test_dpo_on_the_ai_labels(rule_labels, tok, tmp_path):
    policy = tasks.model(tok, seed=0)
    cfg = DPOConfig(output_dir=str(tmp_path), batch_size=8, max_steps=8, learning_rate=5e-3, max_length=32,
                    progress=False, tensorboard=False)
    trainer = train_on_ai_labels(rule_labels, tok, policy, "dpo", cfg, eval_labels=rule_labels)
    after = trainer.evaluate()
    print(f"\nDPO on AI labels: implicit-reward accuracy {after['eval/rewards/accuracy']:.2f}, "
          f"margin {after['eval/rewards/margin']:.3f}")
    assert all(math.isfinite(h["loss"]) for h in trainer.history)
    assert after["eval/rewards/margin"] > 0.1 and after["eval/rewards/accuracy"] >= 0.8, after


# ---- identical and blank pairs are redrawn, then counted -------------------------------------------


class ScriptedGenerator:
    """A Generator that answers each prompt with the next scripted (a, b) pair (n must be 2)."""

    def __init__(self, tok, script: dict[str, list[tuple[str, str]]]):
        self.tok, self.script, self.calls = tok, {k: list(v) for k, v in script.items()}, []

    def update_weights(self, model=None):
        return None

    def generate(self, prompts, sampling):
        assert sampling.n == 2
        self.calls.append((sampling.seed, sampling.prompt_keys))
        texts = []
        for ids in prompts:
            texts += self.script[self.tok.decode(ids, skip_special_tokens=True)].pop(0)
        encoded = [self.tok(t, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id] for t in texts]
        width = max(len(e) for e in encoded)
        response_ids = torch.full((len(texts), width), self.tok.pad_token_id)
        response_mask = torch.zeros((len(texts), width), dtype=torch.long)
        for r, e in enumerate(encoded):
            response_ids[r, : len(e)], response_mask[r, : len(e)] = torch.tensor(e), 1
        zeros = torch.zeros((len(texts), 1), dtype=torch.long)
        return Completions(zeros, zeros, response_ids, response_mask, torch.zeros(response_ids.shape),
                           torch.ones(len(texts), dtype=torch.bool), torch.arange(len(prompts)).repeat_interleave(2))


class TableJudge:
    """A plain-object judge (the complement to LocalLMJudge): P(a better) from a table, symmetric."""

    def __init__(self, table: dict[tuple[str, str], float]):
        self.table = {**table, **{(b, a): 1.0 - p for (a, b), p in table.items()}}
        self.asked = 0

    def prefer(self, prompts, responses_a, responses_b):
        self.asked += len(prompts)
        return torch.tensor([self.table.get((a, b), 0.5 + 0.25 * (_has(a) - _has(b)))
                             for a, b in zip(responses_a, responses_b, strict=True)])


def test_identical_and_blank_pairs_are_redrawn_then_dropped_and_counted(tok):
    script = {
        "the cat": [("cat sat", "cat sat"), ("good dog", "dog")],  # identical, then fine: 1 redraw
        "a dog": [("mat", "mat"), ("rug", "rug"), ("big", "big")],  # identical three times: dropped
        "big mat": [("good", "</s>"), ("red", "   "), ("ran", "")],  # a blank response each time: dropped
        "on rug": [("good ran", "ran")],  # fine at once
    }
    gen = ScriptedGenerator(tok, script)
    judge = TableJudge({})
    labels = label_pairs_with_judge(list(script), tok, gen, judge, RLAIFConfig(max_resamples=2, seed=3,
                                                                              generation_batch_size=2))
    assert labels.counts == {"prompts": 4, "pairs_requested": 4, "pairs": 2, "dropped_identical": 1,
                             "dropped_empty": 1, "dropped_low_confidence": 0, "resampled": 1 + 2 + 2,
                             "mean_confidence": pytest.approx(0.75)}
    assert all(not v for v in gen.script.values())  # every scripted draw was used, none more
    assert len(gen.calls) == 2 + 2 + 1
    # every (draw, pair) has its own noise: the seed changes with the draw, the key is the pair's index
    keys = [(seed, key) for seed, keys in gen.calls for key in keys]
    assert len(keys) == 4 + 3 + 2 == len(set(keys)) and [k for _, k in keys[:4]] == [0, 1, 2, 3]
    assert judge.asked == 2  # only usable pairs reach the judge
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in labels.rows] == [
        ("the cat", "good dog", "dog"), ("on rug", "good ran", "ran")]
    assert [(d["prompt"], d["reason"], d["judge_prob"]) for d in labels.dropped] == [
        ("a dog", "identical", None), ("big mat", "empty", None)]


def test_a_greedy_like_policy_gives_only_identical_pairs(tok):
    """Temperature -> 0: both samples are the argmax path, every redraw too; all counted, none kept."""
    gen = KVCacheGenerator(tasks.model(tok, seed=0), tok.eos_token_id, tok.pad_token_id)
    config = RLAIFConfig(max_new_tokens=4, temperature=1e-6, max_resamples=1, seed=0)
    labels = label_pairs_with_judge(_prompts(6), tok, gen, TableJudge({}), config)
    assert labels.counts["dropped_identical"] + labels.counts["dropped_empty"] == 6 and not labels.rows
    assert labels.resampled == 6 and labels.stats["sequences"] == 24
    with pytest.raises(ValueError, match="no labelled pair to train on"):
        labels.to_rows()


def test_min_confidence_drops_weak_preferences_and_counts_them(tok, tmp_path):
    script = {"the cat": [("cat", "dog")], "a dog": [("sat", "ran")], "big mat": [("mat", "rug")],
              "on rug": [("big", "small")], "red rug": [("red", "blue"), ("yes", "no")]}  # two pairs for the last
    judge = TableJudge({("cat", "dog"): 0.9, ("sat", "ran"): 0.35, ("mat", "rug"): 0.5, ("big", "small"): 0.55,
                        ("red", "blue"): 0.2, ("yes", "no"): 0.61})
    labels = label_pairs_with_judge(list(script)[:4], tok, ScriptedGenerator(tok, script), judge,
                                    RLAIFConfig(min_confidence=0.6, judge_batch_size=3))
    assert labels.counts["pairs"] == 2 and labels.dropped_low_confidence == 2
    assert [(r["chosen"], r["rejected"]) for r in labels.rows] == [("cat", "dog"), ("ran", "sat")]  # B preferred
    assert [r["judge_prob"] for r in labels.rows] == pytest.approx([0.9, 0.65])
    assert labels.mean_confidence == pytest.approx(0.775)
    assert [(d["response_a"], d["judge_prob"]) for d in labels.dropped] == [("mat", 0.5), ("big", pytest.approx(0.55))]
    # two pairs per prompt: samples_per_prompt=4
    two = label_pairs_with_judge(["red rug"], tok, ScriptedGenerator(tok, script), judge,
                                 RLAIFConfig(samples_per_prompt=4, min_confidence=0.6))
    assert two.pairs_requested == 2
    assert [(r["chosen"], r["prompt_index"]) for r in two.rows] == [("blue", 0), ("yes", 0)]
    # the rows round-trip through JSONL into the data layer
    path = labels.write_jsonl(tmp_path / "out" / "ai_labels.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == labels.rows
    assert list(load_rows(path, format="preference")) == labels.rows


# ---- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, match", [
    ({"samples_per_prompt": 3}, "samples_per_prompt must be even"),
    ({"samples_per_prompt": 0}, "samples_per_prompt must be an integer >= 2"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"min_confidence": 1.0}, r"min_confidence must lie in \[0.5, 1\)"),
    ({"min_confidence": 0.3}, r"min_confidence must lie in \[0.5, 1\)"),
    ({"max_resamples": -1}, "max_resamples must be an integer >= 0"),
    ({"judge_batch_size": 0}, "judge_batch_size must be an integer >= 1"),
    ({"generation_batch_size": 2.5}, "generation_batch_size must be an integer >= 1"),
    ({"prompt_truncation": "right"}, "prompt_truncation must be one of"),
])
def test_bad_config_is_an_error_naming_the_setting(bad, match):
    with pytest.raises(ValueError, match=match):
        RLAIFConfig(**bad)


def test_bad_judges_and_inputs_are_errors(tok):
    script = {"the cat": [("cat", "dog")] * 5}

    def run(judge, prompts=("the cat",)):
        return label_pairs_with_judge(list(prompts), tok, ScriptedGenerator(tok, script), judge)

    with pytest.raises(TypeError, match="judge must have a prefer"):
        run(lambda p, c: [0.0])
    with pytest.raises(ValueError, match="no prompts given"):
        run(TableJudge({}), prompts=())
    for out, match in [(torch.tensor([0.5, 0.5]), r"shape \(2,\) for 1 pairs"),
                       (torch.tensor([float("nan")]), "returned nan for the pair of prompt index 0"),
                       ([1.5], "returned 1.5 for the pair of prompt index 0")]:
        with pytest.raises(ValueError, match=match):
            run(SimpleNamespace(prefer=lambda p, a, b, out=out: out))


def test_train_on_ai_labels_checks_method_config_and_model(tok, tmp_path):
    rows = [{"prompt": "the cat", "chosen": "good", "rejected": "bad", "judge_prob": 0.8, "prompt_index": 0}]
    labels = AILabels(rows=rows, dropped=[], num_prompts=1, pairs_requested=1, resampled=0)
    policy = tasks.model(tok)
    with pytest.raises(ValueError, match="method must be one of"):
        train_on_ai_labels(labels, tok, policy, "ppo")
    with pytest.raises(TypeError, match="method 'dpo' takes a DPOConfig, got RewardConfig"):
        train_on_ai_labels(labels, tok, policy, "dpo", RewardConfig(output_dir=str(tmp_path)))
    with pytest.raises(TypeError, match="trains an alignkit.models.RewardModel"):
        train_on_ai_labels(labels, tok, policy, "reward", RewardConfig(output_dir=str(tmp_path)))
    empty = AILabels(rows=[], dropped=[], num_prompts=1, pairs_requested=1, resampled=0)
    with pytest.raises(ValueError, match="no labelled pair to train on"):
        train_on_ai_labels(empty, tok, policy, "dpo", DPOConfig(output_dir=str(tmp_path)))
