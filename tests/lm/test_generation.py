import pytest
import torch
from scipy.stats import chisquare

from alignkit.core.logprobs import token_logprobs
from alignkit.generation import Generator, KVCacheGenerator, SamplingParams, left_pad, process_logits
from alignkit.models.tiny import build_tiny_llama

# "fast" runs the native decode kernels where a C compiler is found (as here); "fast-torch" is the same backend
# on its PyTorch decode path (what users without a compiler get)
BACKENDS = ["fast", "fast-torch", "hf"]


def _backend(name: str, monkeypatch) -> str:
    """The KVCacheGenerator backend for a BACKENDS entry, with the native kernels switched on or off."""
    from alignkit.generation.native import ENV_SWITCH

    monkeypatch.setenv(ENV_SWITCH, "0" if name == "fast-torch" else "1")
    return "fast" if name == "fast-torch" else name


def _prompts(seed, lengths, vocab=97):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_equals_transformers_generate(small_llama, backend, monkeypatch):
    backend = _backend(backend, monkeypatch)
    prompts = _prompts(0, [7, 2, 13, 5, 1])
    ids, mask = left_pad(prompts, 0)
    with torch.no_grad():
        ref = small_llama.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=24,
                                   pad_token_id=0, eos_token_id=2)[:, ids.shape[1]:]
    gen = KVCacheGenerator(small_llama, eos_token_id=2, pad_token_id=0, kernels=backend)
    out = gen.generate(prompts, SamplingParams(max_new_tokens=24, greedy=True))
    assert out.response_ids.shape == (5, 24)
    assert torch.equal(out.response_ids, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_stops_at_eos_like_transformers(small_llama, backend, monkeypatch):
    backend = _backend(backend, monkeypatch)
    prompts = _prompts(1, [4, 9, 6])
    ids, mask = left_pad(prompts, 0)
    gen = KVCacheGenerator(small_llama, eos_token_id=2, pad_token_id=0, kernels=backend)
    free = gen.generate(prompts, SamplingParams(max_new_tokens=20, greedy=True))
    eos = int(free.response_ids[0, 5])  # make a token that row 0 emits at step 5 the EOS
    with torch.no_grad():
        ref = small_llama.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=20,
                                   pad_token_id=0, eos_token_id=eos)[:, ids.shape[1]:]
    out = KVCacheGenerator(small_llama, eos_token_id=eos, pad_token_id=0, kernels=backend).generate(
        prompts, SamplingParams(max_new_tokens=20, greedy=True))
    width = out.response_ids.shape[1]
    assert torch.equal(out.response_ids, ref[:, :width])
    assert (ref[:, width:] == 0).all()  # transformers only padded beyond our early stop
    assert bool(out.finished[0]) and out.response_mask[0].sum() <= 6
    first_eos = (out.response_ids[0] == eos).nonzero()[0].item()
    assert out.response_mask[0, : first_eos + 1].all() and not out.response_mask[0, first_eos + 1:].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_returned_logprobs_equal_a_separate_forward(small_llama, backend, temperature, monkeypatch):
    backend = _backend(backend, monkeypatch)
    prompts = _prompts(2, [3, 8, 5, 11])
    gen = KVCacheGenerator(small_llama, eos_token_id=2, pad_token_id=0, kernels=backend)
    out = gen.generate(prompts, SamplingParams(max_new_tokens=16, temperature=temperature, n=2, seed=3))
    full = torch.cat([out.prompt_ids, out.response_ids], 1)
    attn = torch.cat([out.prompt_mask, out.response_mask], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = small_llama(input_ids=full, attention_mask=attn, position_ids=pos).logits
    p = out.prompt_ids.shape[1]
    lp = token_logprobs(logits[:, p - 1 : -1], out.response_ids, temperature) * out.response_mask
    torch.testing.assert_close(out.logprobs, lp, atol=1e-4, rtol=0)


def _one_token_frequencies(model, sampling, draws):
    gen = KVCacheGenerator(model, eos_token_id=2, pad_token_id=0)
    prompt = [5, 7, 9]
    out = gen.generate([prompt], SamplingParams(max_new_tokens=1, n=draws, **sampling))
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    counts = torch.bincount(out.response_ids[:, 0], minlength=logits.shape[-1]).double()
    return counts, logits


def test_sampling_frequencies_match_softmax_chi_square():
    model = build_tiny_llama(seed=4, vocab_size=12, hidden_size=32, num_layers=1, num_heads=2,
                             intermediate_size=64)
    with torch.no_grad():  # sharpen the head a bit so the distribution is far from uniform
        model.lm_head.weight.mul_(8.0)
    for temperature in (1.0, 0.6):
        counts, logits = _one_token_frequencies(model, {"temperature": temperature, "seed": 7}, 20000)
        probs = torch.softmax(logits.double() / temperature, -1)
        assert probs.max() > 0.2  # not uniform: the test has power
        keep = probs * 20000 >= 5  # chi-square validity: pool tiny cells
        f_obs = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)])
        f_exp = torch.cat([probs[keep], probs[~keep].sum(0, keepdim=True)]) * 20000
        if f_exp[-1] == 0:
            f_obs, f_exp = f_obs[:-1], f_exp[:-1]
        p_value = chisquare(f_obs.numpy(), f_exp.numpy()).pvalue
        assert p_value > 0.001, (temperature, p_value)


@pytest.mark.parametrize("top_k, top_p", [(3, 1.0), (0, 0.6), (4, 0.7)])
def test_top_k_top_p_truncation_respected(top_k, top_p):
    model = build_tiny_llama(seed=5, vocab_size=12, hidden_size=32, num_layers=1, num_heads=2,
                             intermediate_size=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)
    counts, logits = _one_token_frequencies(model, {"top_k": top_k, "top_p": top_p, "seed": 11}, 10000)
    allowed = torch.isfinite(process_logits(logits[None], 1.0, top_k, top_p))[0]
    assert counts[~allowed].sum() == 0
    assert 1 <= int(allowed.sum()) < 12
    probs = torch.softmax(logits.double(), -1) * allowed
    probs = probs / probs.sum()
    idx = allowed.nonzero().squeeze(-1)
    if len(idx) > 1:
        assert chisquare(counts[idx].numpy(), (probs[idx] * 10000).numpy()).pvalue > 0.001


def test_top_p_hand_computed():
    # probs [0.5, 0.3, 0.15, 0.05]; top_p 0.75: mass before token 2 is 0.8 >= 0.75 -> keep tokens 0, 1
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(process_logits(logits, 1.0, 0, 0.75))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(process_logits(logits, 1.0, 0, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(process_logits(logits, 1.0, 0, 0.81)).tolist() == [[True, True, True, False]]


def test_min_new_tokens_n_samples_and_seeding(small_llama):
    gen = KVCacheGenerator(small_llama, eos_token_id=list(range(3, 97)), pad_token_id=0)
    out = gen.generate([[5, 6], [7]], SamplingParams(max_new_tokens=8, min_new_tokens=3, n=3, seed=0))
    # every token but 0, 1, 2 ends the sequence, so each row stops right at step 3 (or earlier if it
    # drew 0/1/2, which are allowed but not EOS)
    assert out.response_ids.shape[0] == 6
    assert (out.response_mask.sum(-1) >= 3).all()
    assert out.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    a = KVCacheGenerator(small_llama, 2, 0).generate([[5, 6]], SamplingParams(max_new_tokens=10, n=4, seed=9))
    b = KVCacheGenerator(small_llama, 2, 0).generate([[5, 6]], SamplingParams(max_new_tokens=10, n=4, seed=9))
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids[0], a.response_ids[1])


def test_bad_inputs_name_the_offender(small_llama):
    gen = KVCacheGenerator(small_llama, 2, 0)
    with pytest.raises(ValueError, match="prompt 1 has 250 tokens"):
        gen.generate([[3], [4] * 250], SamplingParams(max_new_tokens=10))
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        gen.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        SamplingParams(max_new_tokens=4, min_new_tokens=5)
    assert isinstance(gen, Generator)


def test_generation_does_not_leave_model_in_eval_mode(small_llama):
    small_llama.train()
    KVCacheGenerator(small_llama, 2, 0).generate([[3, 4]], SamplingParams(max_new_tokens=2))
    assert small_llama.training
    small_llama.eval()


def test_bf16_greedy_equals_transformers_generate(small_llama):
    model = build_tiny_llama(seed=0, vocab_size=97, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                             intermediate_size=128, max_position_embeddings=256).to(torch.bfloat16)
    prompts = _prompts(3, [6, 3, 10])
    ids, mask = left_pad(prompts, 0)
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                             pad_token_id=0, eos_token_id=2)[:, ids.shape[1]:]
    out = KVCacheGenerator(model, 2, 0, kernels="fast").generate(prompts, SamplingParams(max_new_tokens=12,
                                                                                         greedy=True))
    assert torch.equal(out.response_ids, ref)


def _greedy_matches_transformers(model, prompts, new_tokens=10):
    ids, mask = left_pad(prompts, 0)
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=2)[:, ids.shape[1]:]
    out = KVCacheGenerator(model, 2, 0, kernels="fast").generate(
        prompts, SamplingParams(max_new_tokens=new_tokens, min_new_tokens=new_tokens, greedy=True))
    return torch.equal(out.response_ids, ref)


def test_fast_backend_projection_biases_qwen2():
    # Qwen2 has q/k/v biases: the decode step's weight-major GEMM must add them (addmm path)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                assert proj.bias is not None
                proj.bias.normal_(0, 0.5)  # large enough that ignoring them changes the tokens
    assert _greedy_matches_transformers(model, _prompts(5, [7, 3, 9]))


def test_fast_backend_samples_from_a_lora_policy():
    # LoRA-wrapped projections are not plain nn.Linear: the decode step must call them as modules
    peft = pytest.importorskip("peft")
    model = build_tiny_llama(seed=0, vocab_size=97, hidden_size=64, num_layers=2, num_heads=4,
                             intermediate_size=128, max_position_embeddings=128)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                                          "up_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter (lora_B starts at zero)
    lora.eval()
    prompts = _prompts(6, [5, 8, 2])
    assert _greedy_matches_transformers(lora, prompts)
    greedy = SamplingParams(max_new_tokens=10, greedy=True)
    with_adapter = KVCacheGenerator(lora, 2, 0, kernels="fast").generate(prompts, greedy).response_ids
    with lora.disable_adapter():
        without = KVCacheGenerator(lora, 2, 0, kernels="fast").generate(prompts, greedy).response_ids
    assert not torch.equal(with_adapter, without)  # the adapter matters, so the first check has teeth


def test_fast_backend_single_token_prompts_and_long_decode():
    # one-token prompts (the prefill is a single query), a decode that fills the whole cache, and greedy
    # decoding that honours min_new_tokens (EOS is the argmax of one row at step 12)
    model = build_tiny_llama(seed=1, vocab_size=97, hidden_size=64, num_layers=2, num_heads=4,
                             intermediate_size=128, max_position_embeddings=128)
    assert _greedy_matches_transformers(model, [[5], [9], [17]], new_tokens=40)
    assert _greedy_matches_transformers(model, _prompts(8, [1, 6, 11]), new_tokens=40)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_never_reads_garbage_from_unfilled_cache_slots(dtype, native, monkeypatch):
    # the cache is allocated with torch.empty; the bf16 decode attention reads slots past the filled ones
    # (masked): poisoning them with NaN must change nothing
    from alignkit.generation.engine import LlamaStaticCacheBackend

    _backend("fast" if native else "fast-torch", monkeypatch)
    model = build_tiny_llama(seed=2, vocab_size=97, hidden_size=64, num_layers=2, num_heads=4,
                             intermediate_size=128, max_position_embeddings=128).to(dtype)
    ids, mask = left_pad(_prompts(9, [4, 9, 6]), 0)

    def decode(poison: bool) -> torch.Tensor:
        backend = LlamaStaticCacheBackend(model)
        with torch.no_grad():
            logits = backend.prefill(ids, mask, 70)
            assert bool(backend.native) == native
            if poison:
                for idx in range(len(backend.cache_k)):
                    for cache in backend.cache_slots(idx):  # [N, H_kv, L, D] views, whatever the layout
                        cache[:, :, backend.length:] = float("nan")
            out = [logits]
            for _ in range(69):
                out.append(backend.step(out[-1].argmax(-1)))
        return torch.stack(out)

    clean, poisoned = decode(False), decode(True)
    assert torch.isfinite(poisoned).all()
    assert torch.equal(clean, poisoned)


def test_generation_leaves_the_global_rng_alone(small_llama, monkeypatch):
    # a seeded generate must not draw from (or advance) torch's global generator: training code that seeds
    # it (initialising a reward head, shuffling) would otherwise change with the sampler's internals
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for backend in BACKENDS:
        KVCacheGenerator(small_llama, 2, 0, kernels=_backend(backend, monkeypatch)).generate(
            [[3, 4, 5], [6]], SamplingParams(max_new_tokens=4, n=2, seed=7))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_rms_norm_is_bitwise_transformers_rms_norm(dtype):
    from alignkit.generation.engine import _norm_fn

    norm = build_tiny_llama(seed=0, vocab_size=97, hidden_size=64, num_layers=1, num_heads=4,
                            intermediate_size=128).to(dtype).model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
    fast = _norm_fn(norm)
    assert fast is not norm
    for shape in [(16, 64), (3, 5, 64)]:
        x = (torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
        assert torch.equal(fast(x), norm(x))


@pytest.mark.parametrize("rope", [None, {"rope_type": "linear", "factor": 2.0},
                                  {"rope_type": "dynamic", "factor": 2.0}])
def test_rope_table_gives_the_per_step_rotary_embedding(rope, monkeypatch):
    # the decode step reads cos/sin from a table made at prefill; it must equal calling the model's rotary
    # embedding at each step (and rope types whose frequencies depend on the length seen get no table).
    # Both on the PyTorch decode path, so that the comparison can be bitwise.
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignkit.generation.engine import LlamaStaticCacheBackend

    _backend("fast-torch", monkeypatch)

    extra = {} if rope is None else {"rope_parameters": {"rope_theta": 10000.0, **rope}}
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=24, **extra)).eval()
    ids, mask = left_pad(_prompts(4, [3, 9, 6]), 0)

    def decode(table: bool) -> torch.Tensor:
        backend = LlamaStaticCacheBackend(model)
        if not table:
            monkeypatch.setattr(backend, "_make_rope_table", lambda *a: setattr(backend, "rope_table", None))
        with torch.no_grad():
            out = [backend.prefill(ids, mask, 30)]  # past max_position_embeddings: dynamic NTK rescales
            for _ in range(29):
                out.append(backend.step(out[-1].argmax(-1)))
        assert (backend.rope_table is None) == (not table or (rope or {}).get("rope_type") == "dynamic")
        return torch.stack(out)

    assert torch.equal(decode(True), decode(False))


def test_prefill_in_chunks_of_rows_gives_the_same_tokens(small_llama, monkeypatch):
    # the prompts are encoded a few rows at a time (here 2 rows of 9 tokens per chunk, 3 chunks, the last
    # one short); each chunk fills its own rows of the cache: greedy tokens stay transformers' own
    from alignkit.generation.engine import LlamaStaticCacheBackend

    monkeypatch.setattr(LlamaStaticCacheBackend, "PREFILL_CHUNK_TOKENS", 18)
    assert _greedy_matches_transformers(small_llama, _prompts(10, [7, 2, 9, 5, 1]), new_tokens=12)
