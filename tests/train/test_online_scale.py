"""Online trainers at scale: data parallel over processes (gloo, CPU) equals one process, resume of a
two-process run, LoRA, bf16, gradient checkpointing, impossible splits, no wasted reference."""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from alignkit.generation import KVCacheGenerator, SamplingParams
from alignkit.rewards import contains
from alignkit.trainers import PPOConfig, PPOTrainer, ReinforceConfig, ReinforceTrainer
from alignkit.trainers.online import OnlineConfig

from . import tasks

ROOT = pathlib.Path(__file__).resolve().parents[2]
KINDS = ("reinforce-none", "reinforce-batch", "reinforce-prompt", "reinforce-loo", "reinforce-grpo",
         "reinforce-multi", "ppo", "ppo-shared", "trpo", "bon",
         "rlaif")


def _run(args, processes: int = 1, port: int = 29561):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "tests.train.run_online", *map(str, args)]
    else:
        torchrun = shutil.which("torchrun", path=str(pathlib.Path(sys.executable).parent))
        if torchrun is None:
            pytest.skip("torchrun not found next to the interpreter")
        cmd = [torchrun, "--nproc_per_node", str(processes), "--master_port", str(port), "-m",
               "tests.train.run_online", *map(str, args)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-4000:]


def _load(path):
    return json.loads(pathlib.Path(path).read_text())


def _assert_same_run(a: dict, b: dict, kind: str, atol: float = 1e-5):
    assert a["tokens"] == b["tokens"], f"{kind}: sampled token ids differ"
    assert len(a["history"]) == len(b["history"])
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha.keys() == hb.keys(), kind
        for key, va in ha.items():
            if key.startswith("time/") or (isinstance(va, float) and math.isnan(va)):
                continue
            assert va == pytest.approx(hb[key], abs=atol), (kind, ha["step"], key, va, hb[key])
    for name, values in a["params"].items():
        torch.testing.assert_close(torch.tensor(b["params"][name]), torch.tensor(values), atol=atol, rtol=atol,
                                   msg=lambda m, n=name: f"{kind} {n}: {m}")


@pytest.mark.slow
def test_two_processes_equal_one_process_for_every_online_trainer(tmp_path):
    # 3 steps, 4 prompts x 2 samples; PPO/TRPO: 2 epochs x 2 minibatches (TRPO's critic) x 2 micro-batches,
    # each micro-batch split over the processes; KL in the reward (PPO: adaptive controller)
    _run([tmp_path / "one.json", tmp_path / "one", ",".join(KINDS)])
    _run([tmp_path / "two.json", tmp_path / "two", ",".join(KINDS)], processes=2)
    one, two = _load(tmp_path / "one.json"), _load(tmp_path / "two.json")
    for kind in KINDS:
        assert (one[kind]["world_size"], two[kind]["world_size"]) == (1, 2)  # really two processes
        _assert_same_run(one[kind], two[kind], kind)
        keys = one[kind]["history"][-1]
        assert kind in ("bon", "rlaif") or ("kl" in keys and ("policy_loss" in keys or "trpo/kl" in keys))
    assert one["ppo"]["history"][-1]["kl_coef"] != 0.1  # the adaptive controller moved, on the global KL


@pytest.mark.slow
def test_resume_of_a_two_process_online_run_equals_the_uninterrupted_run(tmp_path):
    _run([tmp_path / "straight.json", tmp_path / "a", "ppo", "--steps", 4], processes=2, port=29562)
    _run([tmp_path / "first.json", tmp_path / "b", "ppo", "--steps", 4, "--save-steps", 2, "--stop-after", 2],
         processes=2, port=29563)
    _run([tmp_path / "second.json", tmp_path / "b", "ppo", "--steps", 4, "--resume", "latest"], processes=2,
         port=29564)
    straight, first, second = (_load(tmp_path / f)["ppo"] for f in ("straight.json", "first.json", "second.json"))
    resumed = {"history": first["history"] + second["history"], "tokens": first["tokens"] + second["tokens"],
               "params": second["params"]}
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    _assert_same_run(straight, resumed, "ppo resumed", atol=1e-6)


@pytest.mark.slow
def test_an_invalid_reward_on_one_process_is_skipped_on_every_process(tmp_path):
    # the processes agree before any update: a lone process that skipped would leave the others waiting in
    # the gradient all-reduce
    _run([tmp_path / "nan.json", tmp_path / "nan", "nan-skip"], processes=2, port=29565)
    run = _load(tmp_path / "nan.json")["nan-skip"]
    assert run["world_size"] == 2 and run["skipped"] == 1
    assert [h["step"] for h in run["history"]] == [1, 3] and run["history"][-1]["skipped_updates"] == 1.0


def test_impossible_splits_fail_at_config_time_with_the_numbers():
    with pytest.raises(ValueError, match=r"prompts_per_step=3 must be divisible by the number of processes \(2\)"):
        OnlineConfig(prompts_per_step=3, samples_per_prompt=2).validate(world_size=2)
    with pytest.raises(ValueError, match=r"each micro-batch holds 2 sequences .* over 4 processes"):
        OnlineConfig(prompts_per_step=4, samples_per_prompt=2, num_minibatches=2, grad_accum_steps=2).validate(4)
    OnlineConfig(prompts_per_step=4, samples_per_prompt=2, num_minibatches=2, grad_accum_steps=2).validate(2)


def test_sampling_noise_is_keyed_by_global_prompt_and_sample_index():
    tok = tasks.tokenizer()
    engine = KVCacheGenerator(tasks.model(tok), tok.eos_token_id, tok.pad_token_id)
    prompts = [tok(p)["input_ids"] for p in ("the cat sat", "a dog", "big red mat on", "no")]
    whole = engine.generate(prompts, SamplingParams(max_new_tokens=6, n=3, seed=11))
    parts = [engine.generate(prompts[i : i + 2], SamplingParams(max_new_tokens=6, n=3, seed=11, first_prompt_index=i))
             for i in (0, 2)]
    for part, rows in zip(parts, (slice(0, 6), slice(6, 12)), strict=True):
        width = part.response_ids.shape[1]
        assert torch.equal(part.response_ids, whole.response_ids[rows, :width])
        assert not whole.response_mask[rows, width:].any()
    other = engine.generate(prompts[2:], SamplingParams(max_new_tokens=6, n=3, seed=11))  # index 0, not 2
    assert not torch.equal(other.response_ids, parts[1].response_ids)


_cfg = tasks.online_config
_mean = tasks.mean_of_last


def test_no_reference_is_built_or_run_when_the_kl_penalty_is_off(tok, prompts, tmp_path):
    off = ReinforceTrainer(_cfg(ReinforceConfig, tmp_path / "a", max_steps=1, kl_penalty="reward", kl_coef=0.0),
                           tasks.model(tok), tok, prompts, contains("good"))
    assert off.reference is None
    h = off.train()
    assert "kl" not in h[0] and "non_score_reward" not in h[0]
    on = ReinforceTrainer(_cfg(ReinforceConfig, tmp_path / "b", max_steps=1, kl_penalty="reward", kl_coef=0.0,
                               adaptive_kl=True), tasks.model(tok), tok, prompts, contains("good"))
    assert on.reference is not None  # an adaptive controller can raise beta from 0


@pytest.mark.parametrize("estimator, penalty", [("k1", "reward"), ("k3", "reward"), ("k2", "loss")])
def test_logged_non_score_reward_is_the_kl_part_of_the_rewards_used(tok, prompts, tmp_path, estimator, penalty):
    trainer = ReinforceTrainer(_cfg(ReinforceConfig, tmp_path, max_steps=2, kl_penalty=penalty, kl_coef=0.3,
                                    kl_estimator=estimator, temperature=0.8), tasks.model(tok), tok, prompts,
                               contains("good"))
    h = trainer.train()
    rollout = trainer._last_rollout
    assert rollout.temperature == 0.8
    from alignkit.core.kl import kl_estimate

    expected_kl = kl_estimate(rollout.logprobs, rollout.ref_logprobs, estimator) * rollout.response_mask
    torch.testing.assert_close(rollout.kl, expected_kl)
    expected = -0.3 * float(expected_kl.sum(-1).mean()) if penalty == "reward" else 0.0
    assert h[-1]["non_score_reward"] == pytest.approx(expected, abs=1e-6)
    total = rollout.scores - 0.3 * expected_kl.sum(-1) if penalty == "reward" else rollout.scores
    assert h[-1]["total_reward"] == pytest.approx(float(total.mean()), abs=1e-6)


@pytest.mark.parametrize("method", ["ppo", "grpo"])
def test_lora_online_trainers_train_adapters_and_their_reference_is_the_base_model(tok, prompts, tmp_path, method):
    # (learning the marker task with LoRA on this 2-layer, hidden-32 model is not reached in 40 steps at lr
    # 3e-3..1e-1, alpha up to 128: the task is learnt by moving the tied "good" embedding, which LoRA cannot)
    from alignkit.models.reference import AdapterDisabledReference

    base = tasks.model(tok)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    if method == "ppo":
        cfg = _cfg(PPOConfig, tmp_path, max_steps=3, lora=True, lora_r=8, lora_alpha=16, learning_rate=2e-2,
                   kl_penalty="reward", kl_coef=0.01)
        trainer = PPOTrainer(cfg, base, tok, prompts, contains("good"))
    else:
        cfg = _cfg(ReinforceConfig, tmp_path, max_steps=3, baseline="grpo", lora=True, lora_r=8, lora_alpha=16,
                   learning_rate=2e-2, kl_penalty="loss", kl_estimator="k3", kl_coef=0.01)
        trainer = ReinforceTrainer(cfg, base, tok, prompts, contains("good"))
    assert isinstance(trainer.reference, AdapterDisabledReference)
    h = trainer.train()
    assert all(math.isfinite(x["policy_loss"]) for x in h) and h[-1]["kl"] != 0.0  # the adapters moved pi
    trainable = [n for n, p in trainer.policy.named_parameters() if p.requires_grad]
    assert any(float(p.abs().max()) > 0 for n, p in trainer.policy.named_parameters() if "lora_B" in n)
    assert trainable and all("lora_" in n for n in trainable)
    # pi_ref = the base model exactly: same log-probs as a fresh model with the initial weights
    fresh = tasks.model(tok)
    fresh.load_state_dict(base_state)
    rollout = trainer._last_rollout
    ids, mask, pos = rollout.sequences(torch.arange(len(rollout)))
    with torch.no_grad():
        ref = trainer.reference.logits(ids, mask, pos)
        expected = fresh(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert torch.equal(ref, expected)
    assert (tmp_path / "final" / "adapter_config.json").is_file()
    if method == "ppo":
        assert all("lora_" in n or "score" in n for n, p in trainer.value_model.named_parameters() if p.requires_grad)
        from alignkit.models import ValueModel

        ValueModel.from_pretrained(tmp_path / "final" / "critic")  # the merged critic loads as a plain model


@pytest.mark.slow
@pytest.mark.parametrize("switch", [{"mixed_precision": "bf16"}, {"gradient_checkpointing": True}])
@pytest.mark.parametrize("method", ["rloo", "ppo"])
def test_bf16_and_gradient_checkpointing_runs_learn_the_task(tok, prompts, tmp_path, switch, method):
    cls, cfg_cls = (ReinforceTrainer, ReinforceConfig) if method == "rloo" else (PPOTrainer, PPOConfig)
    trainer = cls(_cfg(cfg_cls, tmp_path, **switch), tasks.model(tok), tok, prompts, contains("good"))
    if "mixed_precision" in switch:  # sampling from a bf16 copy, refreshed after every update
        assert next(trainer.generator.model.parameters()).dtype == torch.bfloat16
        assert next(trainer.policy.parameters()).dtype == torch.float32
    h = trainer.train()
    assert h[0]["score"] < 0.35 and _mean(h, "score") > 0.7, [round(x["score"], 2) for x in h]
    if "mixed_precision" in switch:
        for (name, p), q in zip(trainer.policy.named_parameters(), trainer.generator.model.parameters(), strict=True):
            torch.testing.assert_close(q, p.detach().to(torch.bfloat16), msg=name)


@pytest.mark.parametrize("method", ["rloo", "ppo"])
def test_gradient_checkpointing_gives_the_same_losses_and_weights(tok, prompts, tmp_path, method):
    cls, cfg_cls = (ReinforceTrainer, ReinforceConfig) if method == "rloo" else (PPOTrainer, PPOConfig)

    def run(out, checkpointing):
        torch.manual_seed(0)
        cfg = _cfg(cfg_cls, out, max_steps=3, gradient_checkpointing=checkpointing, kl_penalty="reward",
                   kl_coef=0.1)
        trainer = cls(cfg, tasks.model(tok), tok, prompts, contains("good"))
        return trainer.train(), trainer.policy

    plain, policy_a = run(tmp_path / "a", False)
    ckpt, policy_b = run(tmp_path / "b", True)
    for a, b in zip(plain, ckpt, strict=True):
        for key in ("policy_loss", "kl", "score", "grad_norm"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a["step"])
    for pa, pb in zip(policy_a.parameters(), policy_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ppo", "grpo"])
def test_lora_ppo_and_grpo_learn_the_marker_task(tok, prompts, tmp_path, method):
    # hidden 128: on the hidden-32 model of the other learning tests the task is learnt by moving the tied
    # "good" embedding, which LoRA (all linear layers but the head) cannot do (measured: stuck near 0.2 at lr
    # 3e-3..1e-1); here, measured: PPO 0.12 -> 0.74 and GRPO 0.12 -> 0.73 (mean of steps 36-40)
    model = tasks.model(tok, hidden=128)
    lora = dict(max_steps=40, lora=True, lora_r=16, lora_alpha=32, learning_rate=1e-2)
    if method == "ppo":
        trainer = PPOTrainer(_cfg(PPOConfig, tmp_path, **lora), model, tok, prompts, contains("good"))
    else:
        trainer = ReinforceTrainer(_cfg(ReinforceConfig, tmp_path, baseline="grpo", **lora), model, tok, prompts,
                                   contains("good"))
    h = trainer.train()
    assert h[0]["score"] < 0.35 and _mean(h, "score") > 0.55, [round(x["score"], 2) for x in h]


def test_an_engine_with_its_own_weights_samples_from_them_until_refreshed():
    # the sampler's own copy (bf16 sampling; FSDP / ZeRO-3, whose parameters are whole only while gathered) is
    # refreshed by name by Generator.update_weights, FSDP's wrapper names included; a model that lacks its
    # tensors is an error, not a silent half-copy
    tok = tasks.tokenizer()
    policy = tasks.model(tok)
    engine = KVCacheGenerator(policy, tok.eos_token_id, tok.pad_token_id, own_weights=True)
    prompts = [tok(p)["input_ids"] for p in ("the cat sat", "a dog")]
    greedy = SamplingParams(max_new_tokens=5, greedy=True)
    before = engine.generate(prompts, greedy).response_ids
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p))  # a large update the copy has not seen yet
    assert torch.equal(engine.generate(prompts, greedy).response_ids, before)

    class FSDPNames(torch.nn.Module):  # parameters named as under FSDP's summon_full_params
        def __init__(self, module):
            super().__init__()
            self._fsdp_wrapped_module = module

    engine.update_weights(FSDPNames(policy))
    fresh = KVCacheGenerator(policy, tok.eos_token_id, tok.pad_token_id).generate(prompts, greedy).response_ids
    assert torch.equal(engine.generate(prompts, greedy).response_ids, fresh)
    assert not torch.equal(fresh, before)
    with pytest.raises(ValueError, match="update_weights"):
        engine.update_weights(torch.nn.Linear(2, 2))
    bf16 = KVCacheGenerator(policy, tok.eos_token_id, tok.pad_token_id, weights_dtype=torch.bfloat16)
    assert bf16.owns_weights and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert not KVCacheGenerator(policy, tok.eos_token_id, tok.pad_token_id, weights_dtype=torch.float32).owns_weights


def test_lora_on_a_model_peft_cannot_wrap_names_its_layer_types_before_anything_is_written(tok, prompts, tmp_path):
    class NoLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(len(tok), 8)
            self.norm = torch.nn.LayerNorm(8)

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="peft cannot wrap NoLinear .*layer types are Embedding, LayerNorm"):
        ReinforceTrainer(_cfg(ReinforceConfig, out, lora=True), NoLinear(), tok, prompts, contains("good"))
    assert not out.exists()
