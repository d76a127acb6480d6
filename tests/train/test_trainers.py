import json

import pytest
import torch

from alignkit.data import load_rows, tokenize_preferences, tokenize_sft
from alignkit.models import RewardModel
from alignkit.trainers import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer
from alignkit.training import CheckpointError, NonFiniteLossError

from . import tasks


@pytest.fixture(scope="module")
def tok():
    return tasks.tokenizer()


def _sft_examples(tok, n=32, seed=0):
    return tokenize_sft(load_rows(tasks.sft_rows(n, seed), format="prompt_completion"), tok, max_length=32)


def _pref_examples(tok, n=32, seed=0):
    return tokenize_preferences(load_rows(tasks.preference_rows(n, seed), format="preference"), tok, max_length=32)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sft_runs_changes_every_parameter_and_logs(tok, tmp_path):
    model = tasks.model(tok)
    before = _params(model)
    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=8, max_steps=3, learning_rate=1e-2, progress=False)
    history = SFTTrainer(cfg, model, _sft_examples(tok), _sft_examples(tok, 8, 1), tokenizer=tok).train()
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    after = _params(model)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, unchanged
    logged = _metrics(tmp_path)
    assert logged[0]["data/examples"] == 32 and logged[0]["data/skipped_rows"] == 0
    assert {"loss", "lr", "grad_norm", "tokens"} <= set(logged[1]) and "eval/loss" in logged[-1]
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "config.json").is_file()
    assert any((tmp_path / "tensorboard").iterdir())
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)


def test_packed_sft_gives_the_same_first_loss_as_unpacked(tok, tmp_path):
    """Packed examples must not attend to each other: same tokens, same parameters -> same loss."""
    examples = _sft_examples(tok, 16)
    losses = []
    for packing in (False, True):
        cfg = SFTConfig(output_dir=str(tmp_path / str(packing)), batch_size=2 if packing else 16, max_steps=1,
                        max_length=24, packing=packing, progress=False, tensorboard=False)
        trainer = SFTTrainer(cfg, tasks.model(tok), examples, tokenizer=tok)
        if packing:
            assert len(trainer.train_examples) < len(examples)
            batch = trainer.collate(trainer.train_examples)
            units = trainer.count_units(trainer.train_examples)
        else:
            batch, units = trainer.collate(examples), trainer.count_units(examples)
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, batch, units)[0].item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_sft_learns(tok, tmp_path):
    model = tasks.model(tok)
    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=16, max_steps=60, learning_rate=1e-2,
                    lr_scheduler="constant", progress=False, tensorboard=False)
    history = SFTTrainer(cfg, model, _sft_examples(tok, 64), tokenizer=tok).train()
    # completions repeat the prompt's first word 1-3 times: ~0.37 nats/token of irreducible entropy; the
    # initial loss is ~ln(vocab) = 3.3. Measured with this seed: 3.34 -> 0.45.
    assert history[-1]["loss"] < 0.35 * history[0]["loss"]


@pytest.mark.slow
def test_reward_model_learns_marker_rule(tok, tmp_path):
    rm = RewardModel.from_causal_lm(tasks.model(tok, hidden=64), pad_token_id=tok.pad_token_id)
    before = _params(rm)
    cfg = RewardConfig(output_dir=str(tmp_path), batch_size=16, max_steps=60, learning_rate=3e-3, progress=False,
                       tensorboard=False)
    trainer = RewardTrainer(cfg, rm, _pref_examples(tok, 256), _pref_examples(tok, 100, seed=7), tokenizer=tok)
    trainer.train()
    assert all(not torch.equal(before[k], v) for k, v in _params(rm).items())
    held_out = trainer.evaluate()
    assert held_out["eval/accuracy"] >= 0.9, held_out
    logged = _metrics(tmp_path)
    assert {"loss", "accuracy", "margin", "reward_chosen", "reward_rejected"} <= set(logged[1])
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").config.num_labels == 1


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_raises_implicit_reward_accuracy_and_margin(tok, tmp_path, loss_type):
    model = tasks.model(tok)
    before = _params(model)
    cfg = DPOConfig(output_dir=str(tmp_path), batch_size=16, max_steps=25, learning_rate=5e-3, beta=0.1,
                    loss_type=loss_type, progress=False, tensorboard=False)
    trainer = DPOTrainer(cfg, model, _pref_examples(tok, 64), _pref_examples(tok, 64, seed=5), tokenizer=tok)
    assert trainer.evaluate()["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # pi = pi_ref at start
    history = trainer.train()
    after = trainer.evaluate()
    assert after["eval/rewards/accuracy"] >= 0.8 and after["eval/rewards/margin"] > 0.1, after
    assert history[-1]["rewards/margin"] > history[0]["rewards/margin"]
    assert all(not torch.equal(before[k], v) for k, v in _params(model).items())


def test_dpo_on_the_fly_reference_matches_precomputed(tok, tmp_path):
    runs = []
    for pre in (True, False):
        cfg = DPOConfig(output_dir=str(tmp_path / str(pre)), batch_size=8, max_steps=3, learning_rate=1e-2,
                        precompute_ref_logprobs=pre, progress=False, tensorboard=False)
        runs.append([h["loss"] for h in DPOTrainer(cfg, tasks.model(tok), _pref_examples(tok, 16),
                                                   tokenizer=tok).train()])
    assert runs[0] == pytest.approx(runs[1], abs=1e-6)


@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_gradient_accumulation_invariance(tok, tmp_path, trainer):
    """batch 8 x 1 micro-batch and batch 8 = 4 micro-batches of 2 give the same trajectory."""
    losses, finals = [], []
    for accum in (1, 4):
        model = tasks.model(tok)
        if trainer == "sft":
            cfg = SFTConfig(output_dir=str(tmp_path / str(accum)), batch_size=8, grad_accum_steps=accum,
                            max_steps=4, learning_rate=1e-2, progress=False, tensorboard=False)
            t = SFTTrainer(cfg, model, _sft_examples(tok), tokenizer=tok)
        else:
            cfg = DPOConfig(output_dir=str(tmp_path / str(accum)), batch_size=8, grad_accum_steps=accum,
                            max_steps=4, learning_rate=1e-2, progress=False, tensorboard=False)
            t = DPOTrainer(cfg, model, _pref_examples(tok), tokenizer=tok)
        losses.append([h["loss"] for h in t.train()])
        finals.append(_params(model))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("trainer", ["sft", "reward", "dpo"])
def test_a_token_budget_cuts_micro_batches_without_changing_the_trajectory(tok, tmp_path, trainer):
    """max_micro_batch_tokens=0 (one forward of 8 examples per step) and a budget of 16 padded tokens (two short
    SFT examples or one preference pair each: the batch is cut into parts) give the same losses, eval
    metrics, reference log-probs and parameters; the budget must really cut (more forwards than steps)."""
    runs = []
    for budget in (0, 16):
        forwards = []
        cfg_kw = dict(output_dir=str(tmp_path / str(budget)), batch_size=8, max_steps=3, learning_rate=1e-2,
                      max_micro_batch_tokens=budget, progress=False, tensorboard=False)
        if trainer == "sft":
            t = SFTTrainer(SFTConfig(**cfg_kw), tasks.model(tok), _sft_examples(tok), _sft_examples(tok, 8, 1),
                           tokenizer=tok)
        elif trainer == "reward":
            rm = RewardModel.from_causal_lm(tasks.model(tok), pad_token_id=tok.pad_token_id)
            t = RewardTrainer(RewardConfig(**cfg_kw), rm, _pref_examples(tok), _pref_examples(tok, 8, 1),
                              tokenizer=tok)
        else:
            t = DPOTrainer(DPOConfig(**cfg_kw), tasks.model(tok), _pref_examples(tok), _pref_examples(tok, 8, 1),
                           tokenizer=tok, reference=tasks.model(tok, seed=1))  # no ties at step 1: accuracy > 0
        compute_loss = t.compute_loss
        t.compute_loss = lambda model, batch, n, seen=forwards, loss=compute_loss: (
            seen.append(batch["input_ids"].shape) or loss(model, batch, n))
        history = t.train()
        reference = [ex[side] for ex in t.train_examples for side in ("ref_chosen_logp", "ref_rejected_logp")
                     if "ref_chosen_logp" in ex]
        runs.append((history, _params(t.model), reference, forwards))
    (plain, plain_params, plain_ref, plain_fw), (cut, cut_params, cut_ref, cut_fw) = runs
    assert len(plain_fw) == 3 + 1 and len(cut_fw) > 2 * len(plain_fw)  # 3 steps + the final evaluation
    rows_per_example = 1 if trainer == "sft" else 2
    assert all(rows * length <= 16 or rows == rows_per_example for rows, length in cut_fw)  # or one example
    for a, b in zip(plain, cut, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    assert plain_ref == pytest.approx(cut_ref, abs=1e-5) and (trainer != "dpo" or plain_ref)
    for k in plain_params:  # Adam's g / sqrt(v) turns float reordering into ~1e-5 moves; a lost part moves ~lr
        torch.testing.assert_close(plain_params[k], cut_params[k], atol=1e-4, rtol=1e-5)


def test_skipped_rows_are_counted_in_the_log(tok, tmp_path):
    rows = tasks.sft_rows(20) + [{"prompt": "the cat", "completion": ""}, {"prompt": 3, "completion": " a"}]
    with pytest.raises(ValueError, match=r"rows\[20\]"):
        load_rows(rows, format="prompt_completion")
    with pytest.warns(RuntimeWarning):
        kept = load_rows(rows, format="prompt_completion", skip_invalid=True)
    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=4, max_steps=1, progress=False, tensorboard=False)
    SFTTrainer(cfg, tasks.model(tok), tokenize_sft(kept, tok, max_length=32), tokenizer=tok).train()
    assert _metrics(tmp_path)[0]["data/skipped_rows"] == 2


def test_impossible_batch_settings_fail_at_config_time(tok, tmp_path):
    with pytest.raises(ValueError, match="batch_size=6 must be divisible by grad_accum_steps=4"):
        SFTTrainer(SFTConfig(output_dir=str(tmp_path), batch_size=6, grad_accum_steps=4), tasks.model(tok),
                   _sft_examples(tok), tokenizer=tok)
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        SFTTrainer(SFTConfig(output_dir=str(tmp_path), batch_size=64), tasks.model(tok), _sft_examples(tok, 10),
                   tokenizer=tok)


def test_nan_loss_stops_before_any_checkpoint(tok, tmp_path):
    model = tasks.model(tok)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=8, max_steps=2, save_steps=1, progress=False,
                    tensorboard=False)
    with pytest.raises(NonFiniteLossError, match="step 1"):
        SFTTrainer(cfg, model, _sft_examples(tok), tokenizer=tok).train()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("save_steps", [1, 0])
def test_a_weight_made_non_finite_by_an_update_is_never_saved(tok, tmp_path, save_steps):
    """An update that leaves a NaN in a weight (here injected after step 2's update) stops the run before the
    step-2 checkpoint or the final model is written, naming the parameter; the step-1 checkpoint stays loadable."""
    from alignkit.training.checkpoint import resolve_resume

    class PoisonedUpdate(SFTTrainer):
        def on_step_end(self):
            if self.step == 2:
                with torch.no_grad():
                    self.accelerator.unwrap_model(self.model).lm_head.weight[3, 1] = float("nan")

    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=8, max_steps=2, save_steps=save_steps, progress=False,
                    tensorboard=False)
    with pytest.raises(NonFiniteLossError, match=r"step 2: lm_head.weight is not finite, so the (step-2 checkpoint"
                                                 r"|final model) is not saved"):
        PoisonedUpdate(cfg, tasks.model(tok), _sft_examples(tok), tokenizer=tok).train()
    assert not (tmp_path / "final").exists()
    if save_steps:
        assert resolve_resume("latest", tmp_path).name == "step-00000001"
        resumed = SFTConfig(output_dir=str(tmp_path), batch_size=8, max_steps=2, save_steps=1, progress=False,
                            tensorboard=False, resume_from="latest")
        SFTTrainer(resumed, tasks.model(tok), _sft_examples(tok), tokenizer=tok).train()
        assert (tmp_path / "final" / "model.safetensors").is_file()


def test_checkpoints_keep_last_and_reject_foreign_or_corrupt(tok, tmp_path):
    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=8, max_steps=4, save_steps=1, save_total_limit=2,
                    progress=False, tensorboard=False)
    SFTTrainer(cfg, tasks.model(tok), _sft_examples(tok), tokenizer=tok).train()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-00000003", "step-00000004"]
    # an interrupted save (a leftover temporary directory) is not taken for a checkpoint
    (tmp_path / "checkpoints" / "step-00000005.tmp-123").mkdir()
    from alignkit.training import list_checkpoints

    assert list_checkpoints(tmp_path)[-1].name == "step-00000004"
    other = SFTConfig(output_dir=str(tmp_path / "b"), batch_size=8, max_steps=5, resume_from=str(
        tmp_path / "checkpoints" / "step-00000004"), progress=False, tensorboard=False)
    with pytest.raises(CheckpointError, match="another model"):
        SFTTrainer(other, tasks.model(tok, hidden=48), _sft_examples(tok), tokenizer=tok).train()
    (tmp_path / "checkpoints" / "step-00000004" / "optimizer.pt").unlink()
    broken = SFTConfig(output_dir=str(tmp_path / "c"), batch_size=8, max_steps=5, resume_from=str(
        tmp_path / "checkpoints" / "step-00000004"), progress=False, tensorboard=False)
    with pytest.raises(CheckpointError, match="incomplete or corrupt.*optimizer.pt"):
        SFTTrainer(broken, tasks.model(tok), _sft_examples(tok), tokenizer=tok).train()


def test_lora_switch_trains_only_adapters_and_saves_a_peft_adapter(tok, tmp_path):
    model = tasks.model(tok)
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = SFTConfig(output_dir=str(tmp_path), batch_size=8, max_steps=3, learning_rate=1e-2, lora=True, lora_r=4,
                    gradient_checkpointing=True, progress=False, tensorboard=False)
    trainer = SFTTrainer(cfg, model, _sft_examples(tok), tokenizer=tok)
    history = trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    trained = {k: v for k, v in peft_model.named_parameters() if v.requires_grad}
    assert trained and all("lora_" in k for k in trained)
    for k, v in peft_model.get_base_model().named_parameters():  # frozen base weights did not move
        if "lora_" not in k:
            assert torch.equal(v, base[k.replace(".base_layer", "")]), k
    from peft import PeftModel

    # the base was built in memory (no hub name in adapter_config.json): load the adapter onto it
    reloaded = PeftModel.from_pretrained(tasks.model(tok), tmp_path / "final")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, peft_model(ids).logits)


def test_a_lora_reward_model_is_saved_merged_and_scores_the_same_when_loaded(tok, tmp_path):
    """The final reward model of a LoRA run is a plain sequence-classification checkpoint: no adapter keys, no
    weight transformers has to initialise, and the same scores as the trained model."""
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    rm = RewardModel.from_causal_lm(tasks.model(tok, hidden=64), pad_token_id=tok.pad_token_id)
    cfg = RewardConfig(output_dir=str(tmp_path), batch_size=8, max_steps=3, learning_rate=1e-2, lora=True, lora_r=4,
                       progress=False, tensorboard=False)
    trainer = RewardTrainer(cfg, rm, _pref_examples(tok, 24), tokenizer=tok)
    trainer.train()
    with safe_open(str(tmp_path / "final" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora_" in k or "base_layer" in k], keys
    loaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    trained = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits[:, 0], trained(ids, torch.ones_like(ids)))


def test_a_margin_column_reaches_the_bradley_terry_loss_and_dpo_refuses_it(tok, tmp_path):
    from alignkit.data import DataError

    rows = tasks.preference_rows(8)
    with_margin = [{**r, "margin": 2.0} for r in rows]
    examples = tokenize_preferences(load_rows(with_margin), tok, max_length=32)
    assert [ex["margin"] for ex in examples] == [2.0] * 8
    assert "margin" not in tokenize_preferences(load_rows(rows), tok, max_length=32)[0]

    def first_loss(data, out):
        torch.manual_seed(0)
        rm = RewardModel.from_causal_lm(tasks.model(tok), pad_token_id=tok.pad_token_id)
        cfg = RewardConfig(output_dir=str(out), batch_size=8, max_steps=1, progress=False, tensorboard=False,
                           num_samples=0)
        return RewardTrainer(cfg, rm, data, tokenizer=tok).train()[0]["loss"]

    plain = first_loss(tokenize_preferences(load_rows(rows), tok, max_length=32), tmp_path / "a")
    margin = first_loss(examples, tmp_path / "b")
    # -log sigma(d - 2) > -log sigma(d) at the same (initial, near-zero) reward difference d
    assert margin > plain + 1.0
    with pytest.raises(ValueError, match="8 preference rows have a 'margin' column, which DPO has no term for"):
        DPOTrainer(DPOConfig(output_dir=str(tmp_path / "dpo"), batch_size=8, progress=False), tasks.model(tok),
                   examples, tokenizer=tok)
    with pytest.raises(DataError, match="margin"):
        tokenize_preferences(load_rows([{**rows[0], "margin": "big"}]), tok, max_length=32)


def test_ipo_token_mean_is_ipo_on_per_token_mean_log_probs(tok, tmp_path):
    from alignkit.models import make_reference
    from alignkit.trainers.dpo import sequence_logprobs

    examples = _pref_examples(tok, 8)
    reference = make_reference(tasks.model(tok, seed=3))  # another model: h != 0
    losses = {}
    for loss_type in ("ipo", "ipo-token-mean"):
        cfg = DPOConfig(output_dir=str(tmp_path / loss_type), batch_size=8, beta=0.5, loss_type=loss_type,
                        precompute_ref_logprobs=False, progress=False, tensorboard=False)
        trainer = DPOTrainer(cfg, tasks.model(tok), examples, tokenizer=tok, reference=reference)
        batch = trainer.collate(examples)
        with torch.no_grad():
            losses[loss_type] = trainer.compute_loss(trainer.model, batch, 8.0)[0].item()
            args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
            pol, ref = sequence_logprobs(trainer.model, *args), sequence_logprobs(reference, *args)
    lengths = batch["loss_mask"][:, 1:].sum(-1).float()
    for loss_type, (p, r) in {"ipo": (pol, ref), "ipo-token-mean": (pol / lengths, ref / lengths)}.items():
        h = (p[:8] - r[:8]) - (p[8:] - r[8:])
        expected = float(((h - 1.0 / (2 * 0.5)) ** 2).mean())  # Azar et al. eq. 17, tau = beta = 0.5
        assert losses[loss_type] == pytest.approx(expected, rel=1e-5), loss_type
    assert abs(losses["ipo"] - losses["ipo-token-mean"]) > 1e-3


def test_dpo_precomputes_reference_log_probs_only_for_the_pairs_the_run_uses(tok, tmp_path):
    examples = _pref_examples(tok, 64)
    cfg = DPOConfig(output_dir=str(tmp_path / "short"), batch_size=8, max_steps=2, progress=False, tensorboard=False)
    trainer = DPOTrainer(cfg, tasks.model(tok), examples, tokenizer=tok)
    with_ref = [i for i, ex in enumerate(trainer.train_examples) if "ref_chosen_logp" in ex]
    assert with_ref == trainer.batcher.indices_used(2) and len(with_ref) == 16
    trainer.train()  # every batch it draws has its reference log-probs
    from alignkit.training.batching import EpochBatcher

    batcher = EpochBatcher(64, 8, seed=0)
    assert len(batcher.indices_used(8)) == 64 and len(batcher.indices_used(3)) == 24
    assert set(batcher.indices_used(9)) == set(range(64))
