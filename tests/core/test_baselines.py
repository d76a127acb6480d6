import pytest
import torch

from alignkit.core.baselines import (
    BASELINES,
    batch_mean_baseline,
    compute_baseline_advantages,
    group_normalized_advantages,
    leave_one_out_baseline,
    prompt_mean_baseline,
)


def test_leave_one_out_reference_figure():
    # rewards [1, 2, 5, 8] of one prompt; baseline for sample i is the mean of the other three:
    # 1 - (2+5+8)/3 = -4, 2 - 14/3 = -2.667, 5 - 11/3 = 1.333, 8 - 8/3 = 5.333
    adv = leave_one_out_baseline(torch.tensor([1.0, 2.0, 5.0, 8.0]), torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(adv, torch.tensor([-4.0, -2.6667, 1.3333, 5.3333]), atol=1e-4, rtol=0)


def test_hand_computed_batch_prompt_and_grpo():
    s = torch.tensor([1.0, 3.0, 10.0, 20.0])
    g = torch.tensor([7, 7, 3, 3])
    # batch mean 8.5
    assert batch_mean_baseline(s).tolist() == [-7.5, -5.5, 1.5, 11.5]
    # prompt means 2 and 15
    assert prompt_mean_baseline(s, g).tolist() == [-1.0, 1.0, -5.0, 5.0]
    # GRPO, unbiased std of {1, 3} = sqrt(2) and of {10, 20} = sqrt(50): -1/1.4142 = -0.7071
    adv = group_normalized_advantages(s, g, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([-0.7071, 0.7071, -0.7071, 0.7071]), atol=1e-4, rtol=0)
    # biased std of {1, 3} = 1
    torch.testing.assert_close(group_normalized_advantages(s, g, unbiased=False, eps=0.0)[:2],
                               torch.tensor([-1.0, 1.0]))
    assert group_normalized_advantages(s, g, scale=False).tolist() == [-1.0, 1.0, -5.0, 5.0]


def _loop_reference(scores, groups, kind):
    out = []
    for i, (s, gi) in enumerate(zip(scores, groups, strict=True)):
        same = [scores[j] for j in range(len(scores)) if groups[j] == gi]
        others = [scores[j] for j in range(len(scores)) if groups[j] == gi and j != i]
        mean = sum(same) / len(same)
        if kind == "loo":
            out.append(s - sum(others) / len(others))
        else:
            std = (sum((x - mean) ** 2 for x in same) / (len(same) - 1)) ** 0.5 if len(same) > 1 else 1.0
            out.append((s - mean) / (std + 1e-6))
    return out


@pytest.mark.parametrize("kind", ["loo", "grpo"])
@pytest.mark.parametrize("seed", range(3))
def test_loop_vs_vectorised_with_uneven_groups(kind, seed):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 5, (30,), generator=g)
    counts = torch.bincount(groups, minlength=5)
    groups = torch.where(counts[groups] < 2, torch.full_like(groups, 99), groups)  # merge singletons
    if int((groups == 99).sum()) == 1:
        groups[groups == 99] = int(groups[groups != 99][0])
    scores = torch.randn(30, generator=g, dtype=torch.float64)
    vec = compute_baseline_advantages(scores, groups, kind)
    ref = torch.tensor(_loop_reference(scores.tolist(), groups.tolist(), kind), dtype=torch.float64)
    torch.testing.assert_close(vec, ref)


def test_loo_equals_scaled_prompt_mean():
    # s_i - mean_{-i} = n/(n-1) (s_i - mean)
    s = torch.tensor([0.3, -1.2, 2.5, 0.0, 4.0])
    g = torch.zeros(5)
    torch.testing.assert_close(leave_one_out_baseline(s, g), prompt_mean_baseline(s, g) * 5 / 4)


def test_errors_name_the_offender():
    with pytest.raises(ValueError, match="index 2"):
        batch_mean_baseline(torch.tensor([1.0, 2.0, float("nan")]))
    with pytest.raises(ValueError, match="sample 2 .*alone"):
        leave_one_out_baseline(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="needs group_ids"):
        compute_baseline_advantages(torch.ones(3), None, "loo")
    with pytest.raises(ValueError, match="unknown baseline"):
        compute_baseline_advantages(torch.ones(3), None, "median")
    assert set(BASELINES) == {"none", "batch", "prompt", "loo", "grpo", "grpo-noscale"}
