"""alignkit.rewards.judge: the local LM judge (order invariance, padding, a rule-following model)."""

import math
from types import SimpleNamespace

import pytest
import torch

from alignkit.models.tiny import build_tiny_llama, build_tokenizer
from alignkit.rewards import PAIRWISE_TEMPLATE, SCORE_TEMPLATE, LocalLMJudge, call_reward_fn, contains

RUBRIC = "Prefer the kind and correct answer."
PROMPTS = ["What is 2+2?", "Say hi.", "Name a colour.", "Count to three please.", "Why?"]
A = ["4", "hi there friend", "blue", "one two three", "Because the sky scatters blue light more."]
B = ["five", "no", "The colour is red, obviously.", "1 2 3", "Dunno"]


def _corpus():
    pair = [PAIRWISE_TEMPLATE.format(rubric=RUBRIC, prompt=p, response_a=a, response_b=b, label_a="A", label_b="B")
            for p, a, b in zip(PROMPTS, A, B, strict=True)]
    single = [SCORE_TEMPLATE.format(rubric=RUBRIC, prompt=p, response=a, labels="1, 2, 3, 4, 5", lowest="1",
                                    highest="5") for p, a in zip(PROMPTS, A, strict=True)]
    return (pair + single) * 3


@pytest.fixture(scope="module")
def bpe():
    return build_tokenizer(_corpus(), vocab_size=320, model="bpe")


@pytest.fixture(scope="module")
def tiny_judge_model(bpe):
    """A random 2-layer Llama with a sharpened head: strongly position-biased, like small real judges."""
    model = build_tiny_llama(seed=2, vocab_size=len(bpe), hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=64, max_position_embeddings=512)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
        model.model.embed_tokens.weight.mul_(20.0)
    return model


def _next_token_probs(model, tok, text, ids):
    """Reference: one unpadded forward, softmax over the label logits at the last position."""
    enc = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(input_ids=enc).logits[0, -1]
    return torch.softmax(logits[ids].double(), -1)


# ---- the invariance ---------------------------------------------------------------------------------


def test_preference_is_invariant_to_the_order_of_the_responses(bpe, tiny_judge_model):
    """The AI judge's preference is invariant to the order in which the two responses are shown."""
    judge = LocalLMJudge(tiny_judge_model, bpe, RUBRIC, batch_size=3)  # 10 judge prompts: chunks of 3
    ab = judge.prefer(PROMPTS, A, B)
    ba = judge.prefer(PROMPTS, B, A)
    assert ab.dtype == torch.float32 and ab.shape == (5,)
    assert ((ab >= 0) & (ab <= 1)).all()
    torch.testing.assert_close(ab, 1 - ba, atol=1e-6, rtol=0)
    # ... although the judge itself is far from order-invariant: asked once, it mostly answers by position.
    label_ids = judge._token_ids[judge.labels]
    p_ab = _next_token_probs(tiny_judge_model, bpe, judge.pairwise_prompt(PROMPTS[0], A[0], B[0]), label_ids)
    p_ba = _next_token_probs(tiny_judge_model, bpe, judge.pairwise_prompt(PROMPTS[0], B[0], A[0]), label_ids)
    assert abs(float(p_ab[0] + p_ba[0]) - 1.0) > 0.5  # P(first) in both orders: strongly position-biased
    # and prefer is exactly the averaged formula (p_AB + 1 - p_BA) / 2, computed here unpadded, one by one
    assert float(ab[0]) == pytest.approx(0.5 * float(p_ab[0] + 1 - p_ba[0]), abs=1e-6)


def test_padding_and_batching_do_not_change_the_answer(bpe, tiny_judge_model):
    one = LocalLMJudge(tiny_judge_model, bpe, RUBRIC, batch_size=1)  # no padding at all
    many = LocalLMJudge(tiny_judge_model, bpe, RUBRIC, batch_size=16)  # lengths differ: left padding
    torch.testing.assert_close(one.prefer(PROMPTS, A, B), many.prefer(PROMPTS, A, B), atol=1e-5, rtol=0)
    texts = [many.pairwise_prompt(p, a, b) for p, a, b in zip(PROMPTS, A, B, strict=True)]
    probs = many.label_probs(texts, many.labels, [""] * len(texts))
    ref = torch.stack([_next_token_probs(tiny_judge_model, bpe, t, many._token_ids[many.labels]) for t in texts])
    torch.testing.assert_close(probs.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(texts)), atol=1e-6, rtol=0)


def test_right_padding_tokenizer_is_handled_and_left_untouched(tiny_judge_model):
    tok = build_tokenizer(_corpus(), vocab_size=320, model="bpe")
    tok.padding_side = "right"
    left = build_tokenizer(_corpus(), vocab_size=320, model="bpe")
    p_right = LocalLMJudge(tiny_judge_model, tok, RUBRIC, batch_size=8).prefer(PROMPTS, A, B)
    p_left = LocalLMJudge(tiny_judge_model, left, RUBRIC, batch_size=8).prefer(PROMPTS, A, B)
    torch.testing.assert_close(p_right, p_left, atol=0, rtol=0)
    assert tok.padding_side == "right"


def test_score_is_the_expected_label_value(bpe, tiny_judge_model):
    judge = LocalLMJudge(tiny_judge_model, bpe, RUBRIC, batch_size=2)
    scores = judge.score(PROMPTS, A)
    assert len(scores) == 5 and all(1.0 <= s <= 5.0 for s in scores)
    ids = judge._token_ids[judge.score_labels]
    p = _next_token_probs(tiny_judge_model, bpe, judge.score_prompt(PROMPTS[3], A[3]), ids)
    assert scores[3] == pytest.approx(float(p @ torch.arange(1.0, 6.0, dtype=torch.float64)), abs=1e-5)
    assert judge(PROMPTS, A) == scores  # a RewardFn in score mode
    assert call_reward_fn(judge.as_reward_fn(), PROMPTS, A).tolist() == pytest.approx(scores, abs=1e-6)


def test_model_mode_is_restored_and_no_graph_is_built(bpe, tiny_judge_model):
    judge = LocalLMJudge(tiny_judge_model, bpe, RUBRIC)
    tiny_judge_model.train()
    try:
        out = judge.prefer(PROMPTS[:2], A[:2], B[:2])
        assert tiny_judge_model.training
        assert not out.requires_grad
    finally:
        tiny_judge_model.eval()


# ---- label tokens -----------------------------------------------------------------------------------


def test_labels_must_be_single_tokens(bpe, tiny_judge_model):
    judge = LocalLMJudge(tiny_judge_model, bpe, RUBRIC)
    # the template ends with ":", so the space-prefixed token " A" is used when it exists
    assert judge._token_ids[judge.labels] == bpe.convert_tokens_to_ids(["\u0120A", "\u0120B"])
    with pytest.raises(ValueError, match=r"label 'Zyxwvut' is not a single known token of this tokenizer"):
        LocalLMJudge(tiny_judge_model, bpe, RUBRIC, labels=("Zyxwvut", "B"))
    with pytest.raises(ValueError, match="labels must be distinct"):
        LocalLMJudge(tiny_judge_model, bpe, RUBRIC, labels=("A", " A"))
    with pytest.raises(ValueError, match=r"score_labels .*label '100' is not a single known token"):
        LocalLMJudge(tiny_judge_model, bpe, RUBRIC, score_labels=("1", "100"))
    no_score = LocalLMJudge(tiny_judge_model, bpe, RUBRIC, score_labels=None)
    with pytest.raises(ValueError, match="score mode is disabled"):
        no_score.score(["q"], ["a"])


def test_templates_are_checked(bpe, tiny_judge_model):
    with pytest.raises(ValueError, match=r"must contain the placeholders \['response_b'\]"):
        LocalLMJudge(tiny_judge_model, bpe, RUBRIC, template="{prompt} {response_a} Answer:")
    with pytest.raises(ValueError, match=r"unknown placeholders \['answer'\]"):
        LocalLMJudge(tiny_judge_model, bpe, RUBRIC, template="{response_a} {response_b} {answer}")
    with pytest.raises(ValueError, match="got 2 prompts, 1 responses_a and 2 responses_b"):
        LocalLMJudge(tiny_judge_model, bpe, RUBRIC).prefer(["a", "b"], ["x"], ["y", "z"])
    assert LocalLMJudge(tiny_judge_model, bpe, RUBRIC).prefer([], [], []).shape == (0,)


# ---- a judge that follows a rule ------------------------------------------------------------------

MARKER = "MARKER"


class RuleLM(torch.nn.Module):
    """A stand-in causal LM over a word-level vocabulary whose next-token logits follow a rule.

    Pairwise prompts: z_A = 2 [MARKER in response A] + 1 (a bias towards the first position),
                      z_B = 2 [MARKER in response B].
    Score prompts:    z_5 = 3 [MARKER in response], z_1 = 3 [no MARKER], other labels 0.
    It also asserts what the judge must guarantee: left padding, position ids of real tokens, no grad.
    """

    def __init__(self, tok):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.vocab = len(tok)
        self.id = {w: tok.convert_tokens_to_ids(w) for w in ["A:", "B:", "Which", "Response:", "Rate", MARKER,
                                                             "A", "B", "1", "5"]}
        self.saw_padding = False

    def _segment(self, ids, start, end):
        """The tokens between the words ``start`` and ``end``."""
        return ids[ids.index(self.id[start]) + 1 : ids.index(self.id[end])]

    def forward(self, input_ids, attention_mask, position_ids):
        assert not torch.is_grad_enabled() and not self.training
        assert attention_mask[:, -1].all(), "rows must be left-padded"
        assert torch.equal(position_ids, (attention_mask.cumsum(-1) - 1).clamp(min=0))
        self.saw_padding |= bool((attention_mask == 0).any())
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for r in range(input_ids.shape[0]):
            ids = input_ids[r][attention_mask[r].bool()].tolist()
            if self.id["A:"] in ids:
                logits[r, -1, self.id["A"]] = 2.0 * (self.id[MARKER] in self._segment(ids, "A:", "B:")) + 1.0
                logits[r, -1, self.id["B"]] = 2.0 * (self.id[MARKER] in self._segment(ids, "B:", "Which"))
            else:
                has = self.id[MARKER] in self._segment(ids, "Response:", "Rate")
                logits[r, -1, self.id["5" if has else "1"]] = 3.0
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def rule_judge():
    texts = _corpus() + [f"A B 1 2 3 4 5 {MARKER} plain text here"]
    tok = build_tokenizer(texts, vocab_size=400, model="word")
    return LocalLMJudge(RuleLM(tok), tok, RUBRIC, batch_size=3)


def test_local_judge_follows_the_rule_model(rule_judge):
    prompts = ["q"] * 4
    a = [f"{MARKER} here", "plain text", f"{MARKER} text plain here", "plain here"]
    b = ["plain text", f"{MARKER} here", f"here {MARKER}", "text plain here"]
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    # a marked, b not: p_AB = s(3 - 0), p_BA = s(1 - 2)  ->  (s(3) + 1 - s(-1)) / 2
    win = 0.5 * (s(3) + 1 - s(-1))
    # both or neither marked: p_AB = p_BA  ->  exactly 1/2, the position bias cancels
    expected = [win, 1 - win, 0.5, 0.5]
    got = rule_judge.prefer(prompts, a, b)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert rule_judge.model.saw_padding  # responses of different lengths were batched together
    rule = contains(MARKER)
    wins = [ra > rb for ra, rb in zip(rule(prompts, a), rule(prompts, b), strict=True)]
    assert [p > 0.5 for p in got.tolist()] == wins
    # pairwise RewardFn against a reference column
    reward = rule_judge.as_reward_fn(reference_column="reference")
    assert reward(prompts, a, reference=b) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="needs the column 'reference'"):
        reward(prompts, a, chosen=b)


def test_local_judge_scores_like_the_rule(rule_judge):
    e3 = math.exp(3)
    marked = (1 + 2 + 3 + 4 + 5 * e3) / (4 + e3)  # softmax over labels 1..5 with z_5 = 3
    unmarked = (1 * e3 + 2 + 3 + 4 + 5) / (4 + e3)  # z_1 = 3
    completions = [f"{MARKER}", "plain", f"text {MARKER} here"]
    assert rule_judge(["q"] * 3, completions) == pytest.approx([marked, unmarked, marked], abs=1e-6)
