"""Tiny synthetic tasks for trainer tests: a word-level tokenizer, a tiny Llama, and datasets."""

from __future__ import annotations

import random

from alignkit.models.tiny import build_tiny_llama, build_tokenizer

WORDS = ("the a cat dog sat ran on under mat rug big small red blue good great nice fine "
         "bad awful poor sad yes no maybe").split()
GOOD, BAD = ["good", "great", "nice"], ["bad", "awful", "poor"]


def tokenizer():
    return build_tokenizer([" ".join(WORDS)] * 3, vocab_size=64, model="word")


def model(tok, seed=0, hidden=32, layers=2):
    return build_tiny_llama(seed=seed, vocab_size=len(tok), hidden_size=hidden, num_layers=layers, num_heads=2,
                            intermediate_size=2 * hidden, max_position_embeddings=128)


def _sentence(rng, n):
    neutral = [w for w in WORDS if w not in GOOD + BAD]
    return " ".join(rng.choice(neutral) for _ in range(n))


def sft_rows(n, seed=0):
    """Completions repeat the prompt's first word: learnable."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p = _sentence(rng, rng.randint(2, 5))
        rows.append({"prompt": p, "completion": " " + " ".join([p.split()[0]] * rng.randint(1, 3))})
    return rows


def preference_rows(n, seed=0):
    """Chosen responses contain a 'good' marker word, rejected ones a 'bad' one, elsewhere alike."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p, tail = _sentence(rng, rng.randint(2, 4)), _sentence(rng, rng.randint(1, 3))
        pos = rng.randint(0, 1)
        good, bad = rng.choice(GOOD), rng.choice(BAD)
        chosen = f" {good} {tail}" if pos else f" {tail} {good}"
        rejected = f" {bad} {tail}" if pos else f" {tail} {bad}"
        rows.append({"prompt": p, "chosen": chosen, "rejected": rejected})
    return rows


def has_good(prompts, completions, **columns):
    """A RewardFn named by import path in CLI tests: 1 when the completion contains "good"."""
    return [float("good" in c.split()) for c in completions]


class GoodWordJudge:
    """A pair judge named by import path in CLI tests: prefers the response with more "good" words, then the
    longer one (P(a better) = sigmoid(difference)); an exact tie is 0.5 and is dropped as unlabelled."""

    def prefer(self, prompts, responses_a, responses_b):
        import math

        def score(text):
            words = text.split()
            return sum(w in GOOD for w in words) + 0.25 * len(words)

        return [1.0 / (1.0 + math.exp(score(b) - score(a))) for a, b in zip(responses_a, responses_b, strict=True)]


def online_config(cls, output_dir, **overrides):
    """The online learning tests' config: 30 steps of 8 prompts x 4 samples of 4 tokens, lr 1e-2, no KL."""
    base = dict(output_dir=str(output_dir), max_steps=30, prompts_per_step=8, samples_per_prompt=4, max_new_tokens=4,
                learning_rate=1e-2, kl_coef=0.0, kl_penalty="none", progress=False, tensorboard=False)
    return cls(**{**base, **overrides})


def mean_of_last(history, key, last=5):
    """Mean of ``key`` over the last ``last`` steps of a trainer's history."""
    return sum(h[key] for h in history[-last:]) / last
