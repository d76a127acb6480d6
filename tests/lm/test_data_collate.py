"""alignkit.data.collate: padding and masks hand-checked, and packing checked against unpacked forwards."""

import pytest
import torch

from alignkit.core.logprobs import token_logprobs
from alignkit.data import Examples, PreferenceCollator, SFTCollator, pack_sft

X = -100


def test_sft_collator_right_pads():
    batch = SFTCollator(pad_token_id=0)([
        {"input_ids": [5, 6, 7, 2], "labels": [X, X, 7, 2]},
        {"input_ids": [8, 2], "labels": [X, 2]},
    ])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2], [8, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[X, X, 7, 2], [X, 2, X, X]]
    assert all(t.dtype == torch.long and t.shape == (2, 4) for t in batch.values())


def test_sft_collator_pad_to_multiple_and_pad_id_equal_to_eos():
    # pad id 2 = EOS: the mask, not the pad id, tells padding from the real EOS.
    batch = SFTCollator(pad_token_id=2, pad_to_multiple_of=4)([{"input_ids": [5, 2], "labels": [X, 2]}])
    assert batch["input_ids"].tolist() == [[5, 2, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[X, 2, X, X]]


def test_sft_collator_errors():
    collate = SFTCollator(0)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="example 1 of the batch has lengths"):
        collate([{"input_ids": [1], "labels": [1]}, {"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="some examples carry position_ids"):
        collate([{"input_ids": [1], "labels": [1], "position_ids": [0]}, {"input_ids": [1], "labels": [1]}])
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        SFTCollator(0, pad_to_multiple_of=0)


def test_preference_collator_chosen_rows_then_rejected_rows():
    pairs = [
        {"prompt_ids": [5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 10, 2]},
        {"prompt_ids": [11], "chosen_ids": [12, 13, 2], "rejected_ids": [14, 2]},
    ]
    batch = PreferenceCollator(pad_token_id=0)(pairs)
    assert batch["num_pairs"] == 2
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 2, 0, 0],       # pair 0, chosen
        [11, 12, 13, 2, 0, 0],    # pair 1, chosen
        [5, 6, 8, 9, 10, 2],      # pair 0, rejected
        [11, 14, 2, 0, 0, 0],     # pair 1, rejected
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1],
                                           [0, 1, 1, 0, 0, 0]]
    # The masked positions are exactly the responses, row by row.
    responses = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
    for row, mask, response in zip(batch["input_ids"], batch["loss_mask"], responses, strict=True):
        assert row[mask.bool()].tolist() == response
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["loss_mask"].shape == (4, 6)


def test_preference_collator_sequence_logps_with_the_documented_shift():
    # logits favour token (t + 1) at position t; seq log-prob = sum over response tokens of the shifted log-probs.
    batch = PreferenceCollator(0)([{"prompt_ids": [1], "chosen_ids": [2, 3], "rejected_ids": [4]}])
    logits = torch.zeros(2, 3, 8)
    logits[:, torch.arange(3), torch.arange(3) + 2] = 5.0  # position t prefers token t + 2
    logp = token_logprobs(logits[:, :-1], batch["input_ids"][:, 1:])
    seq = (logp * batch["loss_mask"][:, 1:]).sum(-1)
    hit = 5.0 - torch.logsumexp(torch.tensor([5.0] + [0.0] * 7), 0)  # log-prob of the favoured token
    miss = -torch.logsumexp(torch.tensor([5.0] + [0.0] * 7), 0)
    # chosen [1, 2, 3]: token 2 at t=1 (favoured at t=0), token 3 at t=2 (favoured at t=1): 2 hits.
    # rejected [1, 4, pad]: token 4 at t=1 is not favoured at t=0 (token 2 is): 1 miss; padding masked.
    torch.testing.assert_close(seq, torch.stack([2 * hit, miss]))


def test_preference_collator_errors():
    with pytest.raises(ValueError, match="pair 0 of the batch has an empty prompt_ids"):
        PreferenceCollator(0)([{"prompt_ids": [], "chosen_ids": [1], "rejected_ids": [2]}])
    with pytest.raises(ValueError, match="empty batch"):
        PreferenceCollator(0)([])


# --------------------------------------------------------------------------------------------------- packing
def test_pack_sft_hand_checked():
    examples = [
        {"input_ids": [1, 2, 3], "labels": [X, 2, 3]},
        {"input_ids": [4, 5], "labels": [4, 5]},
        {"input_ids": [6, 7, 8, 9], "labels": [X, X, 8, 9]},
        {"input_ids": [10], "labels": [10]},
    ]
    rows = pack_sft(examples, max_length=5)
    assert rows == [
        {"input_ids": [1, 2, 3, 4, 5], "labels": [X, 2, 3, X, 5], "position_ids": [0, 1, 2, 0, 1]},
        {"input_ids": [6, 7, 8, 9, 10], "labels": [X, X, 8, 9, X], "position_ids": [0, 1, 2, 3, 0]},
    ]
    batch = SFTCollator(0)(pack_sft(examples[:3], max_length=6))
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["labels"].tolist() == [[X, 2, 3, X, 5], [X, X, 8, 9, X]]


def test_pack_sft_refuses_an_example_longer_than_a_row():
    examples = Examples([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [1, 2, 3], "labels": [1, 2, 3]}],
                        locations=["train.jsonl line 1", "train.jsonl line 2"])
    with pytest.raises(ValueError, match="^train.jsonl line 2: 3 tokens do not fit a packed row of max_length=2"):
        pack_sft(examples, max_length=2)


def test_packed_rows_give_the_logits_of_separate_examples(small_llama):
    """With position_ids, no attention mask and no KV cache, transformers isolates packed examples."""
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": ids, "labels": ids} for ids in
                (torch.randint(4, 97, (n,), generator=g).tolist() for n in (5, 3, 6))]
    batch = SFTCollator(0)(pack_sft(examples, max_length=16))
    assert batch["input_ids"].shape == (1, 14)
    with torch.no_grad():
        packed = small_llama(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                             use_cache=False).logits[0]
        masked = small_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             position_ids=batch["position_ids"], use_cache=False).logits[0]
        cached = small_llama(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for ex in examples:
            n = len(ex["input_ids"])
            alone = small_llama(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, atol=1e-5, rtol=1e-5)
            start += n
    # The caveat: with the 2-D attention mask, or with the KV cache on (the config's default), the later
    # examples attend to the earlier ones.
    assert not torch.allclose(masked[5:8], packed[5:8], atol=1e-3)
    assert not torch.allclose(cached[5:8], packed[5:8], atol=1e-3)
