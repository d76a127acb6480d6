"""alignkit.models.loading: policy loading (safetensors, paths, dropout off) and the tokenizer pad policy."""

import ast
import pathlib

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerFast

import alignkit.models
from alignkit.models import disable_dropout, load_causal_lm, load_tokenizer, resize_for_tokenizer
from alignkit.models.tiny import build_tiny_llama, tiny_llama_config

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            max_position_embeddings=64)


def _ids(batch=3, length=10, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


def _train_forward_twice(model, ids):
    model.train()
    with torch.no_grad():
        return model(input_ids=ids).logits, model(input_ids=ids).logits


# ------------------------------------------------------------------------------------------ (d) dropout off
def test_llama_with_attention_dropout_in_config_is_deterministic_in_train_mode_after_loading(tmp_path):
    config = tiny_llama_config(**TINY)
    config.attention_dropout = 0.5  # Llama has no nn.Dropout: attention reads this float attribute
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    ids = _ids()

    raw = LlamaForCausalLM.from_pretrained(tmp_path)  # without alignkit: dropout active in train mode
    a, b = _train_forward_twice(raw, ids)
    assert not torch.allclose(a, b), "the test needs a model whose train-mode forward is random"

    model = load_causal_lm(tmp_path)
    a, b = _train_forward_twice(model, ids)
    assert torch.equal(a, b)
    assert model.config.attention_dropout == 0.0
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, a, atol=1e-6)  # train mode == eval mode


def test_gpt2_dropout_modules_and_config_fields_are_zeroed_in_memory():
    config = GPT2Config(vocab_size=97, bos_token_id=1, eos_token_id=2, n_positions=32, n_embd=32, n_layer=2,
                        n_head=2, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5, summary_first_dropout=0.5)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    ids = _ids(length=8)
    a, b = _train_forward_twice(model, ids)
    assert not torch.allclose(a, b)

    assert load_causal_lm(model) is model  # an in-memory model is used as is, not copied
    a, b = _train_forward_twice(model, ids)
    assert torch.equal(a, b)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    for field in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"):
        assert getattr(model.config, field) == 0.0, field


def test_peft_is_imported_lazily():
    """peft is optional: no module of alignkit.models may import it at module level (static check)."""
    for path in pathlib.Path(alignkit.models.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # top-level statements only, not function bodies
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "peft" for n in names), f"{path.name} imports peft at top level"


def test_disable_dropout_leaves_non_dropout_floats_alone():
    model = build_tiny_llama(seed=0, **TINY)
    eps, theta = model.config.rms_norm_eps, model.config.rope_parameters
    disable_dropout(model)
    assert model.config.rms_norm_eps == eps and model.config.rope_parameters == theta


# ------------------------------------------------------------------------------------------ (g) loading
def test_load_causal_lm_from_a_saved_checkpoint_gives_the_same_logits(tmp_path):
    model = build_tiny_llama(seed=1, **TINY)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = load_causal_lm(tmp_path / "ckpt")
    assert isinstance(loaded, LlamaForCausalLM)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert load_causal_lm(str(tmp_path / "ckpt"), dtype="bfloat16").dtype == torch.bfloat16


def test_missing_path_error_names_the_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint") as info:
        load_causal_lm(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(str(missing))  # a string path too, not mistaken for a Hub id
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="weights.safetensors"):
        load_causal_lm(tmp_path / "weights.safetensors")


def test_pickle_only_checkpoint_is_refused(tmp_path):
    model = build_tiny_llama(seed=0, **TINY)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_causal_lm(tmp_path)


def test_remote_code_is_off_and_safetensors_on_by_default(tmp_path, monkeypatch):
    build_tiny_llama(seed=0, **TINY).save_pretrained(tmp_path)
    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        seen.update(kwargs)
        return original(cls, path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_causal_lm(tmp_path)
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


# ------------------------------------------------------------------------------------------ (h) pad policy
def _word_tokenizer(pad_token=None, unk_token="<unk>"):
    """A word-level tokenizer whose vocabulary has no '<pad>' (ids: <s>=0, </s>=1, <unk>=2, words 3..)."""
    words = "the cat sat on a mat and dog ran".split()
    vocab = {tok: i for i, tok in enumerate(["<s>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token=unk_token,
                                   pad_token=pad_token, padding_side="right")


@pytest.mark.parametrize("pad_token", [None, "</s>"], ids=["no_pad", "pad_is_eos"])
def test_by_default_a_missing_or_eos_pad_becomes_unk_and_the_vocabulary_never_grows(tmp_path, pad_token):
    _word_tokenizer(pad_token).save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert tok.pad_token == "<unk>" and tok.pad_token_id == 2 and len(tok) == 12
    model = load_causal_lm(build_tiny_llama(seed=0, **{**TINY, "vocab_size": 12}), tokenizer=tok)
    assert model.get_input_embeddings().num_embeddings == 12 and model.config.pad_token_id == 2


def test_without_unk_the_default_pads_with_eos_or_keeps_a_pad_that_is_eos():
    tok = load_tokenizer(_word_tokenizer(None, unk_token=None))
    assert tok.pad_token_id == tok.eos_token_id == 1 and len(tok) == 12
    tok = load_tokenizer(_word_tokenizer("</s>", unk_token=None))
    assert tok.pad_token_id == tok.eos_token_id == 1 and len(tok) == 12


@pytest.mark.parametrize("pad_token", [None, "</s>"], ids=["no_pad", "pad_is_eos"])
def test_pad_policy_add_gives_a_dedicated_pad_token_and_the_model_is_resized(tmp_path, pad_token):
    _word_tokenizer(pad_token).save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path, pad_policy="add")
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 12 and len(tok) == 13  # appended after 12 tokens
    assert tok.pad_token_id != tok.eos_token_id

    # the point of the policy: a mask built from pad ids keeps the real EOS
    batch = tok(["the cat sat </s>", "a dog </s>"], padding=True, return_tensors="pt")
    assert ((batch.input_ids != tok.pad_token_id) == batch.attention_mask.bool()).all()
    assert (batch.input_ids == tok.eos_token_id).sum() == 2

    model = load_causal_lm(build_tiny_llama(seed=0, **{**TINY, "vocab_size": 12}), tokenizer=tok)
    assert model.get_input_embeddings().num_embeddings == 13 and model.lm_head.out_features == 13
    assert model.config.pad_token_id == tok.pad_token_id
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, batch.input_ids.shape[1], 13)


def test_pad_policy_error_names_the_setting():
    with pytest.raises(ValueError, match="pad_policy"):
        load_tokenizer(_word_tokenizer(None), pad_policy="error")
    with pytest.raises(ValueError, match="EOS token '</s>'"):
        load_tokenizer(_word_tokenizer("</s>"), pad_policy="error")
    with pytest.raises(ValueError, match="pad_policy must be one of"):
        load_tokenizer(_word_tokenizer("<unk>"), pad_policy="eos")


def test_a_proper_pad_token_is_left_alone_and_no_resize_happens():
    tok = load_tokenizer(_word_tokenizer("<unk>"), pad_policy="error")  # distinct from EOS: fine
    assert tok.pad_token_id == 2 and len(tok) == 12
    model = build_tiny_llama(seed=0, **{**TINY, "vocab_size": 16})  # a vocabulary padded beyond the tokenizer
    resize_for_tokenizer(model, tok)
    assert model.get_input_embeddings().num_embeddings == 16 and model.config.pad_token_id == 2
