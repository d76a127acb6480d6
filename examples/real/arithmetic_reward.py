"""The verifiable reward of ``grpo_arithmetic.py``, importable by path (``reward_fn=arithmetic_reward:reward``):
1 when the completion's answer (``#### N``, ``\\boxed{N}``, else its last number) equals the ``answer``
column, else 0."""

from alignkit.rewards.rules import exact_match

reward = exact_match(answer_column="answer", last_number_fallback=True)
