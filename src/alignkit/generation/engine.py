"""The default generation engine: batched sampling with a KV cache.

One decoding loop (:class:`KVCacheGenerator`) over one of two forward backends:

* :class:`LlamaStaticCacheBackend` for Llama-family models (llama, mistral, qwen2): the model's own
  weights and modules run in a lean loop with a KV cache preallocated once for prompt + max_new_tokens.
  No per-step mask building, cache concatenation or output objects, which is where ``model.generate``
  spends its time on small and medium models. On CPU, in fp32 or bf16, each decode step runs the fused C
  kernels of :mod:`alignkit.generation.native` between the model's GEMMs (residual add + RMSNorm, RoPE +
  cache write, attention over the cache in blocks of 16 slots, SiLU-mul; plain sampling too) on feature-major
  activations ``[features, N]``, so each GEMM is ``W @ x`` without a transpose; in fp32 the GEMMs are the
  native decode GEMM too (each weight streamed once with the next rows prefetched: the step is bound by
  reading the weights, which MKL's GEMM reads at about half the memory bandwidth here). Elsewhere (no C compiler,
  another dtype or device, another norm or MLP) the same step runs as PyTorch ops on ``[N, d]``
  activations with weight-major GEMMs ``(W @ x.T).T``, RMSNorm and RoPE as transformers computes them and,
  outside fp32, an attention over fixed-size buckets of the cache. docs/benchmarks.md measures both
  against ``model.generate``.
* :class:`HFCacheBackend` for any other causal LM: the model's ``forward`` with its own cache object.

Both give the same tokens as ``model.generate`` for greedy decoding (a test checks this token for token).
Prompts are left-padded; position ids count real tokens only, so padding does not shift them.
"""

from __future__ import annotations

import copy
import time

import torch

from ..models.forward import position_ids_from_mask
from .base import Completions, SamplingParams, left_pad, process_logits, sample_from_probs, sampling_uniforms

__all__ = ["KVCacheGenerator", "LlamaStaticCacheBackend", "HFCacheBackend", "FAST_PATH_MODEL_TYPES"]

FAST_PATH_MODEL_TYPES = ("llama", "mistral", "qwen2")


def _norm_fn(module: torch.nn.Module):
    """Return a fast equivalent of an RMSNorm module, bitwise equal to transformers' Llama/Qwen2 RMSNorm
    (the same operations in the same order: normalise in fp32, cast back, scale by the weight; in place
    where the intermediate is private), or the module itself when it is not of that form. Fewer kernels
    than ``F.rms_norm``, whose CPU composite also copies its input."""
    eps = getattr(module, "variance_epsilon", None)
    weight = getattr(module, "weight", None)
    if not (type(module).__name__.endswith("RMSNorm") and isinstance(eps, float) and weight is not None):
        return module

    def rms_norm(x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        inv_rms = x32.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        if x.dtype == torch.float32:
            return (x32 * inv_rms).mul_(weight)
        return weight * (x32 * inv_rms).to(x.dtype)

    return rms_norm


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding ``x*cos + rotate_half(x)*sin`` with the sine's first half negated beforehand:
    rotate_half(x)*sin == roll(x, D/2)*[-sin1, sin2] exactly, one op fewer per call."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def _feature_major_linear(module: torch.nn.Module, kernels=None):
    """``module`` on feature-major activations: ``x [in, N] -> [out, N]`` (contiguous; ``x`` may be a
    transposed view). A plain ``nn.Linear`` is one GEMM ``W @ x`` (+ bias): the native fp32 decode GEMM when
    ``kernels`` (:class:`~alignkit.generation.native.DecodeKernels`) has it and the weight is fp32, else
    ``torch.mm``; any other module (a LoRA wrapper) is called on ``x.t()`` as it is."""
    if type(module) is not torch.nn.Linear:
        return lambda x: module(x.t()).t().contiguous()
    weight, bias = module.weight, module.bias
    if kernels is not None and kernels.has_linear and weight.dtype == torch.float32 and weight.is_contiguous():
        return lambda x: kernels.linear(weight, x, bias)
    if bias is None:
        return lambda x: torch.mm(weight, x)
    return lambda x: torch.addmm(bias[:, None], weight, x)


def _decode_linear(module: torch.nn.Module):
    """A decode-step equivalent of ``module`` for ``x [N, in] -> [N, out]``.

    A plain ``nn.Linear`` is computed as ``(W @ x.T).T`` (:func:`_feature_major_linear` on the transposed
    view): with few rows (N = batch size) the GEMM with the weight as the left operand runs about 2x faster
    on CPU than ``F.linear``'s ``x @ W.T`` (same products, summed in another order). The result is a
    transposed view; elementwise ops keep that layout. Any other module (a LoRA wrapper, a quantised layer)
    is called as it is.
    """
    if type(module) is not torch.nn.Linear:
        return module
    feature_major = _feature_major_linear(module)
    return lambda x: feature_major(x.t()).t()


def _gated_mlp(mlp: torch.nn.Module) -> tuple | None:
    """``(gate_proj, up_proj, down_proj, act_fn)`` of a Llama/Mistral/Qwen2 gated MLP
    ``down(act(gate(x)) * up(x))``, or None for an MLP of another form."""
    parts = tuple(getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
    return None if any(part is None for part in parts) else parts


class LlamaStaticCacheBackend:
    """Prefill + single-token decode for Llama-family models with a preallocated KV cache.

    The model's parameters are used by reference, so after an optimiser step the backend samples from
    the new weights without copying anything.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        cfg = model.config
        self.decoder = model.get_decoder()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads
        self.scale = self.head_dim**-0.5
        self.input_norms = [_norm_fn(layer.input_layernorm) for layer in self.decoder.layers]
        self.post_norms = [_norm_fn(layer.post_attention_layernorm) for layer in self.decoder.layers]
        self.final_norm = _norm_fn(self.decoder.norm)
        self.decode_layers: list[tuple] | None = None  # decode-step callables, built at the first step
        self.decode_head = _decode_linear(model.lm_head)
        self.cache_k: list[torch.Tensor] = []
        self.cache_v: list[torch.Tensor] = []
        self.key_mask: torch.Tensor | None = None  # [N, L] bool: which cache slots hold real tokens
        self.length = 0  # filled cache slots
        self.no_padding = False  # every prompt slot is a real token
        self.zeroed_until = 0
        self.rope_table: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, signed sin [positions, D]
        self.next_pos: torch.Tensor | None = None  # [N] position id of the next token
        # (kernels, per-layer pieces) for _decode_native, or None: decided at prefill, with the cache layout
        self.native = None
        self.step_buffers: tuple[torch.Tensor, ...] = ()  # _decode_native's x, q_rot, attn_out, workspace
        self.fused = None  # native.FusedLayers: every layer of an fp32 step in one call, made at prefill

    @staticmethod
    def supports(model: torch.nn.Module) -> bool:
        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in FAST_PATH_MODEL_TYPES:
            return False
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) is not False:
            if cfg.model_type == "mistral":
                return False  # sliding-window attention: leave it to the model's own forward
        try:
            decoder = model.get_decoder()
            attn = decoder.layers[0].self_attn
        except (AttributeError, IndexError):
            return False
        expected = {"q_proj", "k_proj", "v_proj", "o_proj"}
        return expected <= {n for n, _ in attn.named_children()} and not hasattr(attn, "q_norm") and hasattr(
            decoder, "rotary_emb"
        )

    @staticmethod
    def _decode_callables(layer) -> tuple:
        """(q, k, v, o, mlp) callables on 2-D ``[N, features]`` activations for one decode step.

        No weight is copied (a fused QKV weight was ~5% faster per step here, but it is a copy of a sixth of
        every layer's weights, made per generate call, and it pushed the peak memory above transformers').
        """
        attn, gated = layer.self_attn, _gated_mlp(layer.mlp)
        q, k, v, o = (_decode_linear(getattr(attn, name)) for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
        if gated is None:
            return q, k, v, o, layer.mlp
        gate, up, down = (_decode_linear(proj) for proj in gated[:3])
        act = gated[3]
        return q, k, v, o, lambda x: down(act(gate(x)) * up(x))

    def _native_plan(self, like: torch.Tensor):
        """The pieces for :meth:`_decode_native`, or None when the native kernels cannot run this model or
        call: not CPU, not fp32/bf16, no RoPE table, a norm or MLP of another form, no C compiler."""
        if like.device.type != "cpu" or self.rope_table is None:
            return None
        from .native import DecodeKernels, load_decode_kernels

        if like.dtype not in DecodeKernels.DTYPES or self.head_dim % 2 or self.num_heads % self.num_kv_heads:
            return None
        if any(isinstance(norm, torch.nn.Module) for norm in (*self.input_norms, *self.post_norms, self.final_norm)):
            return None  # not the RMSNorm form _norm_fn recognises
        final = self.decoder.norm
        norms = [final, *(n for layer in self.decoder.layers for n in (layer.input_layernorm,
                                                                         layer.post_attention_layernorm))]
        if any(norm.weight.dtype != like.dtype for norm in norms):
            return None
        kernels = load_decode_kernels()
        if kernels is None or self.head_dim > kernels.max_head_dim:
            return None
        # fused: per layer what DecodeKernels.fused_layers takes (norm weights, projection weights, their biases)
        # for the fp32 step in one native call; None where a projection is not a plain fp32 nn.Linear (LoRA)
        layers, fused = [], [] if like.dtype == torch.float32 else None
        for layer in self.decoder.layers:
            attn, gated = layer.self_attn, _gated_mlp(layer.mlp)
            if gated is None or type(gated[3]).__name__ not in ("SiLU", "SiLUActivation"):
                return None
            norm_in, norm_post = layer.input_layernorm, layer.post_attention_layernorm
            projections = [getattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")] + list(gated[:3])
            layers.append((norm_in.weight, norm_in.variance_epsilon, norm_post.weight, norm_post.variance_epsilon,
                           *(_feature_major_linear(proj, kernels) for proj in projections)))
            if fused is not None and all(type(p) is torch.nn.Linear and p.weight.dtype == torch.float32
                                         and p.weight.is_contiguous() for p in projections):
                fused.append([norm_in.weight, norm_post.weight, *(p.weight for p in projections),
                              *(p.bias for p in projections)])
            else:
                fused = None
        head = self.model.lm_head
        head = _feature_major_linear(head, kernels) if type(head) is torch.nn.Linear else None
        return kernels, layers, (final.weight, final.variance_epsilon), head, fused

    def _decode_native(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`_decode` with the native kernels (:mod:`alignkit.generation.native`) on feature-major
        activations ``[features, N]``. Per layer: residual add + RMSNorm (one kernel), the q/k/v GEMMs, RoPE
        + cache write (one kernel), attention (one kernel), the o GEMM, residual add + RMSNorm, the gate/up
        GEMMs, SiLU-mul (one kernel), the down GEMM. The residual stream ``h [d, N]`` is updated in place; ``x``
        and the other step buffers, made at prefill, are reused across layers and steps (each GEMM has read
        ``x`` before the next kernel writes it). Returns the final hidden states as a ``[N, d]`` view of ``x``,
        valid until the next step."""
        kernels, layers, (final_weight, final_eps), _, _ = self.native
        x, q_rot, attn_out, workspace = self.step_buffers
        h = self.decoder.embed_tokens(tokens).t().contiguous()  # [d, N]
        slot = self.length
        mask = None if self.no_padding else self.key_mask
        cos_table, sin_table = self.rope_table
        if self.fused is not None:  # fp32: the same kernels in one native call for all layers
            pending = self.fused.step(h, cos_table, sin_table, self.next_pos, mask, slot, self.scale)
            self.length += 1
            return kernels.add_rms_norm(h, pending, final_weight, final_eps, x).t()
        pending = None  # the previous layer's MLP output, added to h by the next norm kernel
        for idx, (w_in, eps_in, w_post, eps_post, q_proj, k_proj, v_proj, o_proj, gate, up, down) in enumerate(layers):
            kernels.add_rms_norm(h, pending, w_in, eps_in, x)
            cache_k, cache_v = self.cache_k[idx], self.cache_v[idx]
            kernels.rope_to_cache(q_proj(x), k_proj(x), v_proj(x), cos_table, sin_table, self.next_pos, q_rot,
                                  cache_k, cache_v, slot)
            kernels.decode_attention(q_rot, cache_k, cache_v, mask, slot + 1, self.scale, attn_out, workspace)
            kernels.add_rms_norm(h, o_proj(attn_out.t()), w_post, eps_post, x)
            g = gate(x)
            pending = down(kernels.silu_mul(g, up(x), torch.empty_like(g)))
        self.length += 1
        return kernels.add_rms_norm(h, pending, final_weight, final_eps, x).t()

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One decode step on 2-D activations: ``tokens [N]`` written at cache slot ``length``; returns the
        final hidden states ``[N, d]``."""
        if self.native:
            return self._decode_native(tokens)
        dec = self.decoder
        n = tokens.shape[0]
        h = dec.embed_tokens(tokens)
        cos, sin = (t[:, :, 0] for t in self._rope(h, self.next_pos[:, None]))  # [N, 1, D]: over heads
        slot = self.length
        keys_len, mask = self._decode_attention_span(slot, h.dtype)  # once per step, for every layer
        heads, kv_heads = self.num_heads, self.num_kv_heads
        if self.decode_layers is None:
            self.decode_layers = [self._decode_callables(layer) for layer in self.decoder.layers]
        for idx, (q_proj, k_proj, v_proj, o_proj, mlp) in enumerate(self.decode_layers):
            x = self.input_norms[idx](h)
            q = q_proj(x).view(n, heads, self.head_dim)
            k = k_proj(x).view(n, kv_heads, self.head_dim)
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
            cache_k, cache_v = self.cache_k[idx], self.cache_v[idx]
            cache_k[:, :, slot] = k
            cache_v[:, :, slot] = v_proj(x).view(n, kv_heads, self.head_dim)
            out = self._decode_attention(q.contiguous()[:, :, None], cache_k[:, :, :keys_len],
                                         cache_v[:, :, :keys_len], mask)
            h = h + o_proj(out.view(n, heads * self.head_dim))
            h = h + mlp(self.post_norms[idx](h))
        self.length += 1
        return self.final_norm(h)

    def _rope(self, like: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin ``[N, 1, q, D]`` at ``positions [N, q]``, in ``like``'s dtype (broadcast over
        heads); read from the table made at prefill when there is one. See :func:`_apply_rope`."""
        if self.rope_table is not None:
            cos_table, sin_table = self.rope_table
            return cos_table[positions][:, None], sin_table[positions][:, None]
        cos, sin = self.decoder.rotary_emb(like, positions)
        half = self.head_dim // 2
        return cos[:, None], torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)[:, None]

    def _make_rope_table(self, like: torch.Tensor, length: int) -> None:
        """Tabulate cos and signed sin for positions [0, length) in ``like``'s dtype. The rotary embedding
        computes each entry from its own position alone, so the table holds the numbers per-call use gives.
        Skipped for rope types whose frequencies depend on the longest sequence seen (dynamic NTK, LongRoPE)."""
        self.rope_table = None
        rope_type = str(getattr(self.decoder.rotary_emb, "rope_type", "default"))
        if "dynamic" in rope_type or "longrope" in rope_type:
            return
        cos, sin = self._rope(like, torch.arange(length, device=like.device)[None])
        self.rope_table = (cos[0, 0], sin[0, 0])

    def cache_slots(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``idx``'s key and value caches as ``[N, H_kv, L, D]`` views, whatever their layout."""
        return self.cache_k[idx], self.cache_v[idx]

    def _repeat_kv(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grouped-query attention: each of the ``H_kv`` key/value heads serves ``H / H_kv`` query heads."""
        if self.num_kv_heads == self.num_heads:
            return keys, values
        rep = self.num_heads // self.num_kv_heads
        return keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)

    def _decode_attention_span(self, slot: int, dtype: torch.dtype) -> tuple[int, torch.Tensor | None]:
        """How many cache slots the decode attention reads, and its mask as SDPA takes it (bool, True = may
        attend; or a float bias added to the scores), for the query written at ``slot``.

        fp32: the filled slots, masked only when a prompt was padded. Other dtypes: the slots up to the
        next multiple of ``ATTENTION_BUCKET`` (unfilled ones zeroed and biased by -inf), see
        :meth:`_decode_attention`.
        """
        if dtype == torch.float32:
            width = slot + 1
            return width, None if self.no_padding else self.key_mask[:, None, None, :width]
        width = self._bucket_end(slot)
        allowed = self.key_mask[:, None, None, :width]
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
        return width, bias.masked_fill_(~allowed, float("-inf"))

    def _decode_attention(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                          mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of one query per row ``q [N, H, 1, D]`` over ``keys``/``values [N, H_kv, L, D]`` with the
        mask of :meth:`_decode_attention_span`; ``[N, H, 1, D]``.

        fp32: the SDPA kernel. Other dtypes: two matmuls with the softmax in fp32, as transformers' eager
        attention does. The bucketed length keeps the shapes few, so oneDNN reuses its bf16 matmul
        primitives instead of building one per cache length; at batch 64 that is 3-4x faster than the CPU
        flash kernel for single-token queries.
        """
        keys, values = self._repeat_kv(keys, values)
        if q.dtype == torch.float32:
            return torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
        scores = torch.matmul(q, keys.transpose(-1, -2)).float().mul_(self.scale).add_(mask)
        return torch.matmul(torch.softmax(scores, dim=-1).to(q.dtype), values)

    ATTENTION_BUCKET = 32  # cache slots per bucket in the non-fp32 decode attention

    def _bucket_end(self, slot: int) -> int:
        """End of the bucket holding ``slot``; zeroes the cache slots past ``slot`` in it the first time (the
        cache is allocated empty, and 0 * garbage could be NaN)."""
        total = self.key_mask.shape[1]
        end = min(total, -(-(slot + 1) // self.ATTENTION_BUCKET) * self.ATTENTION_BUCKET)
        if end > self.zeroed_until:
            start = max(self.zeroed_until, slot + 1)
            for cache in (*self.cache_k, *self.cache_v):
                cache[:, :, start:end].zero_()
            self.zeroed_until = end
        return end

    def _prefill_keys_values(self, idx: int, attn, x: torch.Tensor, cos, sin,
                             rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the prompts ``x [n, P, d]`` (RoPE applied to the keys), written to cache slots
        ``[0, P)`` of batch rows ``rows``; returned as ``[n, H_kv, P, D]``."""
        n, q_len, _ = x.shape
        k = attn.k_proj(x).view(n, q_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(n, q_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        k = _apply_rope(k, cos, sin)
        cache_k, cache_v = self.cache_slots(idx)
        cache_k[rows, :, :q_len] = k
        cache_v[rows, :, :q_len] = v
        return k, v

    def _prefill_attention(self, idx: int, layer, x: torch.Tensor, cos, sin, attn_mask: torch.Tensor,
                           rows: slice) -> torch.Tensor:
        """Self-attention of the prompts ``x [n, P, d]`` (``attn_mask [n, 1, P, P]``, True = may attend),
        writing their keys and values to the cache (see :meth:`_prefill_keys_values`)."""
        attn = layer.self_attn
        n, q_len, _ = x.shape
        q = _apply_rope(attn.q_proj(x).view(n, q_len, self.num_heads, self.head_dim).transpose(1, 2), cos, sin)
        keys, values = self._repeat_kv(*self._prefill_keys_values(idx, attn, x, cos, sin, rows))
        out = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask, scale=self.scale)
        return attn.o_proj(out.transpose(1, 2).reshape(n, q_len, self.num_heads * self.head_dim))

    def _step_linear(self, module: torch.nn.Module):
        """``module`` on rows ``x [n, in] -> [n, out]`` computed as the decode step computes it (the same GEMM
        operands and layouts, so the prefill's last layer adds no GEMM shapes, nor oneDNN primitives built
        for them, to those the decode step uses anyway)."""
        if not self.native:
            linear = _decode_linear(module)
            return lambda x: linear(x.contiguous())
        feature_major = _feature_major_linear(module)
        return lambda x: feature_major(x.t().contiguous()).t()

    def _prefill_last_layer(self, idx: int, layer, h: torch.Tensor, cos, sin, attn_mask: torch.Tensor,
                            rows: slice) -> torch.Tensor:
        """The last decoder layer over the prompts ``h [n, P, d]``: keys and values at every position (to the
        cache), but queries, attention, output projection and MLP at the last position only, since nothing
        reads the others (a fifth of the prefill's GEMMs at 4 layers). Returns ``[n, d]``."""
        attn, n = layer.self_attn, h.shape[0]
        x = self.input_norms[idx](h)
        keys, values = self._repeat_kv(*self._prefill_keys_values(idx, attn, x, cos, sin, rows))
        q = self._step_linear(attn.q_proj)(x[:, -1]).reshape(n, self.num_heads, 1, self.head_dim)
        q = _apply_rope(q, cos[:, :, -1:], sin[:, :, -1:])
        out = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask[:, :, -1:],
                                                               scale=self.scale)
        h = h[:, -1] + self._step_linear(attn.o_proj)(out.reshape(n, self.num_heads * self.head_dim))
        x = self.post_norms[idx](h)
        gate, up, down, act = _gated_mlp(layer.mlp) or (None,) * 4
        if gate is None:
            return h + layer.mlp(x)
        g, u = self._step_linear(gate)(x), self._step_linear(up)(x)
        a = self.native[0].silu_mul(g, u, torch.empty_like(g)) if self.native else act(g) * u
        return h + self._step_linear(down)(a)

    def _prefill_forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                         attn_mask: torch.Tensor, rows: slice) -> torch.Tensor:
        """Run the decoder on the prompts ``input_ids [n, P]`` of batch rows ``rows``, filling their cache
        slots [0, P); returns the last position's final hidden state ``[n, d]``."""
        dec = self.decoder
        h = dec.embed_tokens(input_ids)
        cos, sin = self._rope(h, position_ids)  # [n, 1, P, D], once for all layers
        last = len(dec.layers) - 1
        for idx, layer in enumerate(dec.layers[:last]):
            h = h + self._prefill_attention(idx, layer, self.input_norms[idx](h), cos, sin, attn_mask, rows)
            x = self.post_norms[idx](h)
            if self.native:  # the gated MLP's activation in one kernel (silu and mul on 5 MB tensors at B64)
                mlp, gate = layer.mlp, layer.mlp.gate_proj(x)
                h = h + mlp.down_proj(self.native[0].silu_mul(gate, mlp.up_proj(x), torch.empty_like(gate)))
            else:
                h = h + layer.mlp(x)
        return self.final_norm(self._prefill_last_layer(last, dec.layers[last], h, cos, sin, attn_mask, rows))

    PREFILL_CHUNK_TOKENS = 512  # prompt tokens per prefill chunk (whole prompts; GEMMs of 512 rows stay efficient)

    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Encode left-padded prompts ``[N, P]``; returns the logits for the first new token ``[N, V]``."""
        n, p = input_ids.shape
        total = p + max_new_tokens
        self.key_mask = torch.zeros((n, total), dtype=torch.bool, device=input_ids.device)
        self.key_mask[:, :p] = mask.bool()
        self.no_padding = bool(mask.bool().all())  # then decode attention needs no mask over filled slots
        self.length = 0
        position_ids = position_ids_from_mask(mask)
        self.next_pos = position_ids[:, -1] + 1
        like = self.decoder.embed_tokens.weight
        self._make_rope_table(like[:1, None], int(self.next_pos.max()) + max_new_tokens)
        self.native = self._native_plan(like)
        # [N, H_kv, L, D] for both paths: the slots of a row's key/value head are one block (the native attention
        # reads them in blocks of 16)
        shape = (n, self.num_kv_heads, total, self.head_dim)
        layers = len(self.decoder.layers)
        self.cache_k = [torch.empty(shape, dtype=like.dtype, device=like.device) for _ in range(layers)]
        self.cache_v = [torch.empty(shape, dtype=like.dtype, device=like.device) for _ in range(layers)]
        self.fused = None
        if self.native:
            heads, head_dim = self.num_heads, self.head_dim
            self.step_buffers = (like.new_empty((like.shape[1], n)), like.new_empty((n, heads, head_dim)),
                                 like.new_empty((n, heads * head_dim)),
                                 self.native[0].attention_workspace(n, heads, head_dim, total))
            fused_weights = self.native[4]
            if fused_weights is not None:
                eps = [(layer[1], layer[3]) for layer in self.native[1]]
                caches = list(zip(self.cache_k, self.cache_v, strict=True))
                self.fused = self.native[0].fused_layers(fused_weights, eps, caches, self.step_buffers)
        self.zeroed_until = p  # slots before this hold keys and values or zeros (see _bucket_end)
        causal = torch.ones(p, p, dtype=torch.bool, device=input_ids.device).tril()
        # real keys only; a padding query may see itself so that no row is empty (its output is unused)
        attn_mask = (causal[None] & mask.bool()[:, None, :]) | torch.eye(p, dtype=torch.bool, device=input_ids.device)
        # in chunks of rows: the MLP's intermediate activations of a whole batch of prompts (5.5 MB per tensor
        # at 64 x 32 tokens, hidden 672, fp32) would otherwise outweigh the rest of the call's memory
        chunk = max(1, self.PREFILL_CHUNK_TOKENS // p)
        h = torch.cat([self._prefill_forward(input_ids[r:r + chunk], position_ids[r:r + chunk],
                                             attn_mask[r:r + chunk, None], slice(r, r + chunk))
                       for r in range(0, n, chunk)])
        self.length = p
        return self._step_linear(self.model.lm_head)(h).contiguous()

    def step(self, tokens: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        """Append one token per row ``[N]``; returns the next logits ``[N, V]`` (with ``contiguous=False``, as
        the head's GEMM leaves them: a transposed view)."""
        self.key_mask[:, self.length] = True
        h = self._decode(tokens)
        self.next_pos = self.next_pos + 1
        native_head = self.native[3] if self.native else None
        logits = native_head(h.t()).t() if native_head else self.decode_head(h)
        return logits.contiguous() if contiguous else logits

    def release(self) -> None:
        self.cache_k, self.cache_v, self.key_mask, self.decode_layers, self.rope_table = [], [], None, None, None
        self.native, self.step_buffers, self.fused = None, (), None


class HFCacheBackend:
    """Prefill + decode through the model's own ``forward`` and cache: works for any HF causal LM."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.past = None
        self.mask: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None

    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        position_ids = position_ids_from_mask(mask)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True)
        self.past = out.past_key_values
        self.mask = mask.long()
        self.next_pos = position_ids[:, -1:] + 1
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        """Append one token per row ``[N]``; returns the next logits ``[N, V]`` (``contiguous`` is for the
        caller's sake only: these are whatever the model returns)."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos,
            past_key_values=self.past,
            use_cache=True,
        )
        self.past = out.past_key_values
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1]

    def release(self) -> None:
        self.past = None


class _StepSampler:
    """The per-step draw of :meth:`KVCacheGenerator.generate`: ``(logits [N, V], eos_allowed) -> (token [N],
    log-prob [N])``, the log-prob under the full tempered distribution (what the trainer recomputes).

    Greedy: argmax (EOS masked while forbidden, as transformers' MinNewTokens processor). Sampling: softmax
    of ``logits / T`` (top-k/top-p applied if set) drawn by inverse CDF, EOS given probability 0 while
    forbidden. On the native decode path plain sampling (no top-k/top-p) is one kernel over the logits as
    the step leaves them (:meth:`~alignkit.generation.native.DecodeKernels.sample_rows`): the same uniforms
    and the same draw, without the log-softmax, exp, cumulative sum and search as separate ops.
    """

    def __init__(self, sampling: SamplingParams, eos: torch.Tensor, uniforms: torch.Tensor | None, backend,
                 vocab: int, n: int):
        self.sampling, self.eos = sampling, eos
        self.uniforms = uniforms  # [N, max_new_tokens] float64 (None when greedy): step t draws column t
        self.truncate = sampling.top_k > 0 or sampling.top_p < 1.0
        native = getattr(backend, "native", None)
        self.fused = native[0] if native and not sampling.greedy and not self.truncate else None
        if self.fused is not None:
            self.forbid = torch.zeros(vocab, dtype=torch.uint8)
            self.forbid[eos[eos < vocab]] = 1
            self.token, self.logp = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.float32)

    def __call__(self, logits: torch.Tensor, eos_allowed: bool, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        sampling, eos = self.sampling, self.eos
        uniforms = None if self.uniforms is None else self.uniforms[:, t].contiguous()
        if self.fused is not None:
            self.fused.sample_rows(logits, sampling.temperature, uniforms, None if eos_allowed else self.forbid,
                                   self.token, self.logp)
            return self.token, self.logp
        scores = logits.float()
        if sampling.temperature != 1.0:
            scores = scores / sampling.temperature
        logp_full = torch.log_softmax(scores, dim=-1)
        if sampling.greedy:
            if not eos_allowed:
                logits = logits.clone()
                logits[:, eos] = float("-inf")
            token = logits.argmax(-1)
        else:
            if self.truncate:
                scores = process_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
                if not eos_allowed:
                    scores[:, eos] = float("-inf")
                probs = torch.softmax(scores, -1)
            else:
                probs = logp_full.exp()
                if not eos_allowed:  # EOS forbidden: zero it (the sampler renormalises)
                    probs[:, eos] = 0.0
            token = sample_from_probs(probs, uniforms=uniforms)
        return token, logp_full.gather(-1, token[:, None]).squeeze(-1)


class KVCacheGenerator:
    """Batched KV-cache sampler for a Hugging Face causal LM (implements ``Generator``).

    Args:
        model: the policy (``AutoModelForCausalLM``-like). Used by reference: training updates are seen.
        eos_token_id: id (or ids) that end a sequence.
        pad_token_id: id written after a sequence has ended and used for left padding.
        kernels: ``"auto"`` (the fast Llama-family path when the architecture allows), ``"fast"`` (that path or
            an error) or ``"hf"`` (the model's own forward with transformers' cache).
        max_length: refuse prompts longer than this (None = the model's max_position_embeddings, if any).
        weights_dtype: sample from the engine's *own copy* of the weights in this dtype (e.g. bf16 sampling
            for a policy trained in fp32); :meth:`update_weights` refreshes the copy after each update.
        own_weights: keep an own copy even in the model's dtype (for sharded training, FSDP / ZeRO-3, whose
            parameters are whole only while gathered: call :meth:`update_weights` inside the gather).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_id: int | list[int],
        pad_token_id: int,
        kernels: str = "auto",
        max_length: int | None = None,
        weights_dtype: torch.dtype | None = None,
        own_weights: bool = False,
    ):
        if kernels not in ("auto", "fast", "hf"):
            raise ValueError(f"kernels must be 'auto', 'fast' or 'hf', got {kernels!r}")
        if kernels == "fast" and not LlamaStaticCacheBackend.supports(model):
            raise ValueError(
                f"the fast kernels support model types {FAST_PATH_MODEL_TYPES}; "
                f"got {getattr(model.config, 'model_type', type(model).__name__)!r}"
            )
        self.source = model
        dtype = next(model.parameters()).dtype
        self.owns_weights = own_weights or (weights_dtype is not None and weights_dtype != dtype)
        if self.owns_weights:
            self.model = copy.deepcopy(model).to(weights_dtype or dtype).requires_grad_(False).eval()
        else:
            self.model = model
        self.eos_ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        self.pad_token_id = int(pad_token_id)
        self.kernels = "fast" if kernels == "fast" or (
            kernels == "auto" and LlamaStaticCacheBackend.supports(model)) else "hf"
        self.max_length = max_length or getattr(getattr(model, "config", None), "max_position_embeddings", None)

    def update_weights(self, model: torch.nn.Module | None = None) -> None:
        """Sample from the current weights of ``model`` (default: the model the engine was built on).

        Without an own copy the backends read parameters by reference, so an in-place optimiser step needs no
        call, and a ``model`` given here becomes the one sampled from. With an own copy (``weights_dtype`` /
        ``own_weights``) every parameter and buffer is copied (and cast) into it by name; names may carry
        FSDP's ``_fsdp_wrapped_module.`` segments."""
        if not self.owns_weights:
            if model is not None:
                self.model = model
            return
        source = model if model is not None else self.source
        wanted = dict(self.model.named_parameters())
        wanted.update(self.model.named_buffers())
        found = 0
        with torch.no_grad():
            for name, tensor in [*source.named_parameters(), *source.named_buffers()]:
                name = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
                target = wanted.get(name)
                if target is not None and target.shape == tensor.shape:
                    target.copy_(tensor)
                    found += 1
        if found < len(dict(self.model.named_parameters())):
            raise ValueError(f"update_weights: {type(source).__name__} has {found} of the engine's "
                             f"{len(wanted)} tensors; was it built from another model?")

    def _backend(self):
        if self.kernels == "fast":
            return LlamaStaticCacheBackend(self.model)
        return HFCacheBackend(self.model)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> Completions:
        """Sample ``sampling.n`` completions per prompt. See :class:`Completions` for the layout."""
        device = next(self.model.parameters()).device
        for i, p in enumerate(prompts):
            if self.max_length is not None and len(p) + sampling.max_new_tokens > self.max_length:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens; with max_new_tokens={sampling.max_new_tokens} it exceeds "
                    f"the model's max length {self.max_length} (truncate prompts or lower max_new_tokens)"
                )
        if sampling.prompt_keys is not None and len(sampling.prompt_keys) != len(prompts):
            raise ValueError(f"sampling.prompt_keys has {len(sampling.prompt_keys)} keys for {len(prompts)} prompts")
        ids, mask = left_pad(prompts, self.pad_token_id, device)
        group_ids = torch.arange(len(prompts), device=device).repeat_interleave(sampling.n)
        ids, mask = ids[group_ids], mask[group_ids]
        n = ids.shape[0]
        uniforms = None if sampling.greedy else sampling_uniforms(
            sampling, group_ids.cpu(), sampling.max_new_tokens).to(device)
        eos = self.eos_ids.to(device)

        was_training = self.model.training
        self.model.eval()
        backend = self._backend()
        t0 = time.perf_counter()
        tokens_out = torch.full((n, sampling.max_new_tokens), self.pad_token_id, dtype=torch.long, device=device)
        logprobs_out = torch.zeros((n, sampling.max_new_tokens), dtype=torch.float32, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        try:
            logits = backend.prefill(ids, mask, sampling.max_new_tokens)
            t_prefill = time.perf_counter() - t0
            steps = 0
            any_done = False  # Python-side flag: skip the per-row bookkeeping until some row has ended
            draw = _StepSampler(sampling, eos, uniforms, backend, logits.shape[-1], n)
            for t in range(sampling.max_new_tokens):
                eos_allowed = t >= sampling.min_new_tokens
                token, logp = draw(logits, eos_allowed, t)
                if any_done:
                    token = token.masked_fill(done, self.pad_token_id)
                    logp = logp.masked_fill(done, 0.0)
                tokens_out[:, t] = token
                logprobs_out[:, t] = logp
                steps = t + 1
                if eos_allowed:  # before min_new_tokens no row can end
                    hit_eos = torch.isin(token, eos)
                    if any_done:
                        hit_eos &= ~done
                    if bool(hit_eos.any()):
                        finished |= hit_eos
                        done |= hit_eos
                        any_done = True
                        if bool(done.all()):
                            break
                if t + 1 == sampling.max_new_tokens:
                    break
                logits = backend.step(token, contiguous=draw.fused is None)
        finally:
            backend.release()
            if was_training:
                self.model.train()
        tokens_out, logprobs_out = tokens_out[:, :steps], logprobs_out[:, :steps]
        # response mask: tokens up to and including the first EOS
        is_eos = torch.isin(tokens_out, eos).long()
        response_mask = (torch.cumsum(is_eos, dim=1) - is_eos == 0).long()
        elapsed = time.perf_counter() - t0
        stats = {
            "prefill_s": t_prefill,
            "decode_s": elapsed - t_prefill,
            "generate_s": elapsed,
            "decode_steps": float(steps),
            "generated_tokens": float(response_mask.sum()),
        }
        return Completions(
            prompt_ids=ids,
            prompt_mask=mask,
            response_ids=tokens_out,
            response_mask=response_mask,
            logprobs=logprobs_out * response_mask,
            finished=finished,
            group_ids=group_ids,
            stats=stats,
        )
