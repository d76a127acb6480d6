"""Fixtures shared by the trainer tests: the word-level tokenizer and the prompts of the synthetic tasks."""

import pytest

from . import tasks


@pytest.fixture(scope="module")
def tok():
    return tasks.tokenizer()


@pytest.fixture(scope="module")
def prompts():
    return [r["prompt"] for r in tasks.sft_rows(64)]
