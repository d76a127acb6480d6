"""The native decode kernels (alignkit.generation.native) against PyTorch references, the engine's native
decode step against its PyTorch decode step, and the fallback when no compiler can build the kernels."""

import shutil

import pytest
import torch

import alignkit.generation.native as native
from alignkit.generation import KVCacheGenerator, SamplingParams, left_pad
from alignkit.generation.engine import LlamaStaticCacheBackend, _apply_rope
from alignkit.models.tiny import build_tiny_llama

HAS_COMPILER = shutil.which("cc") is not None


@pytest.fixture(scope="module")
def kernels():
    if not HAS_COMPILER:
        pytest.skip("no C compiler: the engine runs its PyTorch decode path (tested in test_generation.py)")
    loaded = native.load_decode_kernels()
    assert loaded is not None, "a C compiler is present but the native decode kernels did not build"
    return loaded


def _randn(*shape, seed=0, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rms_norm_matches_transformers_rms_norm(kernels, dtype):
    norm = build_tiny_llama(seed=0, vocab_size=97, hidden_size=64, num_layers=1, num_heads=4,
                            intermediate_size=128).to(dtype).model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
    rows, d = 19, 64  # 19 rows: one full block of 16 and a partial one
    h, r = _randn(rows, d, seed=1, dtype=dtype, scale=3), _randn(rows, d, seed=2, dtype=dtype)
    expected_h = h + r  # rounded to dtype, as the model's residual add
    with torch.no_grad():
        expected = norm(expected_h)
    h_fm = h.t().contiguous()  # the kernels work on feature-major [d, N]
    out = torch.empty_like(h_fm)
    kernels.add_rms_norm(h_fm, r.t().contiguous(), norm.weight, norm.variance_epsilon, out)
    assert torch.equal(h_fm.t(), expected_h)  # the residual is added in place, rounded as torch rounds
    # the mean of squares is summed in another order: equal to an ulp (fp32) or a bf16 rounding step
    tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 0.0, "rtol": 2**-7}
    torch.testing.assert_close(out.t(), expected, **tol)
    kernels.add_rms_norm(h_fm, None, norm.weight, norm.variance_epsilon, out)  # no residual: h unchanged
    assert torch.equal(h_fm.t(), expected_h)
    torch.testing.assert_close(out.t(), expected, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_to_cache_matches_the_pytorch_rope_and_writes_one_slot(kernels, dtype):
    n, heads, kv_heads, head_dim, slots, slot = 18, 4, 2, 16, 7, 5
    q = _randn(n, heads, head_dim, seed=1, dtype=dtype)
    k = _randn(n, kv_heads, head_dim, seed=2, dtype=dtype)
    v = _randn(n, kv_heads, head_dim, seed=3, dtype=dtype)
    angles = torch.arange(40.0)[:, None] * torch.linspace(0.01, 1.0, head_dim // 2)[None]
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(dtype)
    sin = torch.cat([-angles.sin(), angles.sin()], -1).to(dtype)  # signed sine, as the engine tabulates it
    positions = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(4))
    cache_k = torch.full((n, kv_heads, slots, head_dim), 7.0, dtype=dtype)
    cache_v = torch.full_like(cache_k, 7.0)
    q_out = torch.empty(n, heads, head_dim, dtype=dtype)
    feature_major = [t.reshape(n, -1).t().contiguous() for t in (q, k, v)]
    kernels.rope_to_cache(*feature_major, cos, sin, positions, q_out, cache_k, cache_v, slot)
    c, s = cos[positions][:, None], sin[positions][:, None]
    # same products and sum, each rounded as the tensor ops round them: bitwise equal
    assert torch.equal(q_out, _apply_rope(q, c, s))
    assert torch.equal(cache_k[:, :, slot], _apply_rope(k, c, s))
    assert torch.equal(cache_v[:, :, slot], v)
    others = [i for i in range(slots) if i != slot]
    assert (cache_k[:, :, others] == 7).all() and (cache_v[:, :, others] == 7).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("span", [1, 64, 150])
def test_decode_attention_matches_sdpa(kernels, dtype, span):
    # GQA (4 query heads on 2 key/value heads), spans of one slot to most of the cache (150 = 9 blocks of 16 and
    # a partial one), a row whose first 70 slots are masked, one with every other slot masked, and NaN in every
    # slot it must not read
    n, heads, kv_heads, head_dim, slots = 5, 4, 2, 16, 160
    q = _randn(n, heads, head_dim, seed=1, dtype=dtype, scale=2)
    cache_k = _randn(n, kv_heads, slots, head_dim, seed=2, dtype=dtype, scale=2)
    cache_v = _randn(n, kv_heads, slots, head_dim, seed=3, dtype=dtype)
    mask = torch.ones(n, slots, dtype=torch.bool)
    mask[1, :3] = False
    mask[2, : min(70, span - 1)] = False
    mask[3, 1::2] = False
    mask[:, span - 1] = True  # the step's own slot
    for cache in (cache_k, cache_v):
        cache[:, :, span:] = float("nan")
        cache.transpose(1, 2)[~mask] = float("nan")
    out = torch.empty(n, heads * head_dim, dtype=dtype)
    workspace = kernels.attention_workspace(n, heads, head_dim, slots)
    kernels.decode_attention(q, cache_k, cache_v, mask, span, head_dim**-0.5, out, workspace)

    keys = cache_k[:, :, :span].double().repeat_interleave(2, dim=1).nan_to_num()
    values = cache_v[:, :, :span].double().repeat_interleave(2, dim=1).nan_to_num()
    ref = torch.nn.functional.scaled_dot_product_attention(q.double()[:, :, None], keys, values,
                                                           attn_mask=mask[:, None, None, :span], scale=head_dim**-0.5)
    ref = ref.reshape(n, heads * head_dim)
    assert torch.isfinite(out).all()
    tol = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.0, "rtol": 2**-7}
    torch.testing.assert_close(out.double(), ref.to(dtype).double(), **tol)
    if span > 1:  # without the mask the answer differs, so the mask was honoured
        kernels.decode_attention(q, cache_k.nan_to_num(), cache_v.nan_to_num(), None, span, head_dim**-0.5, out,
                                 workspace)
        assert not torch.allclose(out.double(), ref.to(dtype).double(), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_matches_torch(kernels, dtype):
    g, u = _randn(672, 19, seed=1, dtype=dtype, scale=4), _randn(672, 19, seed=2, dtype=dtype)
    g[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -0.0], dtype=dtype)  # the exp's clamped ends and zero
    out = kernels.silu_mul(g, u, torch.empty_like(g))
    expected = torch.nn.functional.silu(g) * u
    tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 0.0, "rtol": 2**-7}
    torch.testing.assert_close(out, expected, **tol)


def _teacher_forced_decode(model, native_on: bool, prompts, steps: int, monkeypatch) -> torch.Tensor:
    """Logits of ``steps`` decode steps fed the same tokens (so both paths see one sequence): [steps, N, V]."""
    monkeypatch.setenv(native.ENV_SWITCH, "1" if native_on else "0")
    ids, mask = left_pad(prompts, 0)
    backend = LlamaStaticCacheBackend(model)
    feed = torch.randint(3, model.config.vocab_size, (steps, len(prompts)), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = [backend.prefill(ids, mask, steps)]
        assert bool(backend.native) == native_on
        # fp32 runs every layer in one native call (GCC builds), so that call is what this compares
        fused = native_on and model.dtype == torch.float32 and backend.native[0].has_linear
        assert (backend.fused is not None) == fused
        for t in range(steps - 1):
            out.append(backend.step(feed[t]))
    return torch.stack(out).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_decode_step_matches_the_pytorch_decode_step(kernels, dtype, monkeypatch):
    # padded prompts, GQA, 70 steps (the attention crosses a 64-slot block); bf16 rounds differently in the
    # attention (fp32 throughout here, a bf16 matmul there), so its bound is a few bf16 steps of the logits
    model = build_tiny_llama(seed=3, vocab_size=97, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                             intermediate_size=128, max_position_embeddings=256).to(dtype)
    prompts = [[5, 9, 11], [7] * 12, [3, 4, 5, 6, 7, 8, 9]]
    fast = _teacher_forced_decode(model, True, prompts, 70, monkeypatch)
    ref = _teacher_forced_decode(model, False, prompts, 70, monkeypatch)
    atol = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(fast, ref, atol=atol, rtol=0)
    assert (fast - ref).abs().mean() < atol / 10


def test_fused_fp32_step_adds_every_projection_bias(kernels, monkeypatch):
    # attention_bias and mlp_bias: all seven projections have biases, which the fused fp32 step must add
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                      attention_bias=True, mlp_bias=True)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.bias"):
                p.normal_(0, 1.0)
    prompts = [[5, 9, 11], [7] * 12, [3, 4, 5, 6, 7, 8, 9]]
    fast = _teacher_forced_decode(model, True, prompts, 20, monkeypatch)
    ref = _teacher_forced_decode(model, False, prompts, 20, monkeypatch)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=0)
    for name in ("mlp.up_proj", "mlp.down_proj", "self_attn.o_proj"):  # each bias moves the logits far more
        bias = model.model.layers[1].get_submodule(name).bias
        with torch.no_grad():
            saved = bias.clone()
            bias.zero_()
            moved = _teacher_forced_decode(model, True, prompts, 20, monkeypatch)
            bias.copy_(saved)
        assert (moved - ref).abs().max() > 100 * 1e-4, name


def _greedy(model, prompts):
    return KVCacheGenerator(model, 2, 0, kernels="fast").generate(prompts, SamplingParams(max_new_tokens=12,
                                                                                        greedy=True)).response_ids


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.load_decode_kernels() is None


@pytest.mark.parametrize("compiler", ["no-such-compiler-alignkit", "false"])
def test_without_a_working_compiler_the_engine_warns_and_falls_back(small_llama, compiler, monkeypatch, tmp_path):
    # no compiler on PATH, or one that fails: one warning naming the cause, then the PyTorch decode path
    prompts = [[5, 9, 11], [7, 8]]
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    expected = _greedy(small_llama, prompts)
    monkeypatch.setenv(native.ENV_SWITCH, "1")
    monkeypatch.setenv("CC", compiler)
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    with pytest.warns(RuntimeWarning, match="no C compiler" if "no-such" in compiler else "failed"):
        assert native.load_decode_kernels() is None
    assert torch.equal(_greedy(small_llama, prompts), expected)
    assert not list(tmp_path.rglob("*.so"))


@pytest.mark.skipif(not HAS_COMPILER, reason="needs a C compiler")
def test_kernels_are_built_once_into_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(native.ENV_SWITCH, "1")
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load_decode_kernels() is not None
    built = list((tmp_path / "kernels").glob("decode_kernels-*.so"))
    assert len(built) == 1 and native.kernel_cache_dir() == tmp_path / "kernels"
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})  # a new process: found in the cache, not rebuilt
    assert native.load_decode_kernels() is not None
    assert built[0].stat().st_mtime_ns == stamp and len(list(tmp_path.rglob("*.so"))) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["rows", "feature-major"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_rows_draws_what_sample_from_probs_draws(kernels, dtype, layout, temperature):
    # same uniforms -> same tokens as the PyTorch sampler (softmax in fp32, inverse CDF in float64), EOS ids
    # never drawn while forbidden yet kept in the log-prob's normaliser; rows in both layouts the engine has
    from alignkit.generation.base import sample_from_probs

    n, vocab = 37, 211  # two full blocks of 16 rows and a partial one
    logits = _randn(n, vocab, seed=1, dtype=dtype, scale=3)
    logits[:, 2] += 4.0  # a likely EOS, so forbidding it matters
    if layout == "feature-major":
        logits = logits.t().contiguous().t()
    forbid = torch.zeros(vocab, dtype=torch.uint8)
    forbid[[2, 5]] = 1
    for forbidden in (None, forbid):
        uniforms = torch.rand(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        token, logp = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.float32)
        kernels.sample_rows(logits, temperature, uniforms, forbidden, token, logp)
        logp_full = torch.log_softmax(logits.float() / temperature, -1)
        probs = logp_full.exp()
        if forbidden is not None:
            probs[:, forbidden.bool()] = 0.0
        expected = sample_from_probs(probs, torch.Generator().manual_seed(2))
        assert torch.equal(token, expected)
        torch.testing.assert_close(logp, logp_full.gather(-1, token[:, None])[:, 0], atol=2e-6, rtol=0)
        if forbidden is not None:
            assert not forbidden[token].any()
        else:
            assert (token == 2).any()  # the draws do reach the likely EOS when it is allowed
