"""Native (C) kernels for the decode step of :class:`~alignkit.generation.engine.LlamaStaticCacheBackend`.

A decode step of a small model on CPU spends as much time dispatching small PyTorch ops (RMSNorm's five,
RoPE's six, the cache writes, the attention's, the MLP's activation, the sampler's) as in its matrix
products. The kernels in ``decode_kernels.c`` do that work in one call each: ``add_rms_norm`` (residual add
+ RMSNorm), ``rope_to_cache`` (RoPE of queries and keys + KV-cache write), ``decode_attention`` (one query
per row over the cache, softmax in fp32), ``silu_mul`` (the gated MLP's activation) and
``sample_rows`` (a multinomial draw per row and its log-prob), fp32 and bf16; and, fp32 only, ``gemm_f32``,
the decode step's matrix products (:meth:`DecodeKernels.linear`).

The library is compiled at first use with the system's C compiler (``$CC`` or ``cc``; a second or so) into
a per-user cache, keyed by the sources, the flags and the CPU (``-march=native``), and loaded with ctypes,
as PyTorch's own inductor does for CPU code. Where no compiler is found or the build fails,
:func:`load_decode_kernels` returns ``None`` with one warning and the engine uses its PyTorch path (same
numbers up to summation order). ``ALIGNKIT_NATIVE_KERNELS=0`` turns the kernels off;
``ALIGNKIT_CACHE_DIR`` moves the cache (default ``$XDG_CACHE_HOME/alignkit`` or ``~/.cache/alignkit``).
No code is downloaded or taken from configs: the sources are the two files beside this module.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["DecodeKernels", "FusedLayers", "load_decode_kernels", "kernel_cache_dir", "ENV_SWITCH"]

ENV_SWITCH = "ALIGNKIT_NATIVE_KERNELS"
_SOURCE_DIR = Path(__file__).resolve().parent
_SOURCES = ("decode_kernels.c", "decode_kernels_body.h")
# -ffp-contract=off: a*b + c*d rounds like the separate tensor ops it replaces (no FMA contraction);
# -fno-math-errno -fno-trapping-math: lets the exp and float->int loops vectorise (results unchanged).
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
          "-shared", "-fPIC", "-std=c11")
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}

_P, _L, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
_SIGNATURES = {
    "add_rms_norm": (_P, _P, _P, _P, _L, _L, _F),
    "rope_to_cache": (_P, _P, _P, _P, _P, _P, _P, _P, _P, _L, _L, _L, _L, _L, _L),
    "decode_attention": (_P, _P, _P, _P, _L, _P, _L, _L, _L, _L, _L, _L, _F, _P, _L),
    "silu_mul": (_P, _P, _P, _L),
    "sample_rows": (_P, _L, _L, _L, _L, _F, _P, _P, _P, _P, _L),
}

_RESTYPES = {"sample_rows": ctypes.c_int}  # the others return nothing

_lock = threading.Lock()
_loaded: dict[str, DecodeKernels | None] = {}


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$ALIGNKIT_CACHE_DIR/kernels`` (default ``~/.cache/alignkit``)."""
    root = os.environ.get("ALIGNKIT_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "alignkit")
    return Path(root) / "kernels"


def _cpu_signature() -> str:
    """The CPU model and feature flags (``-march=native`` code is only valid on the same kind of CPU)."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{model}|{flags}"


def _build(compiler: str) -> Path:
    """Compile the kernels (if not cached) and return the shared library's path."""
    sources = b"".join((_SOURCE_DIR / name).read_bytes() for name in _SOURCES)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(b"\0".join([sources, " ".join(_FLAGS).encode(), version.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:20]
    target = kernel_cache_dir() / f"decode_kernels-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # build to a private name, then rename: concurrent processes (one per GPU/rank) never load half a file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, "-I", str(_SOURCE_DIR), "-o", tmp, str(_SOURCE_DIR / _SOURCES[0]), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_decode_kernels() -> DecodeKernels | None:
    """The compiled kernels, built on first use; ``None`` if turned off or no C compiler could build them
    (warned once per process). Thread-safe; later calls return the same object."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    compiler = os.environ.get("CC") or "cc"
    with _lock:
        if compiler in _loaded:
            return _loaded[compiler]
        kernels = None
        if shutil.which(compiler) is None:
            warnings.warn(f"alignkit: no C compiler {compiler!r} found; the generation engine uses its PyTorch "
                          f"decode path (set CC, or {ENV_SWITCH}=0 to silence this)", RuntimeWarning, stacklevel=2)
        else:
            try:
                kernels = DecodeKernels(ctypes.CDLL(str(_build(compiler))))
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                warnings.warn(f"alignkit: building the native decode kernels failed; the generation engine uses "
                              f"its PyTorch decode path ({err})", RuntimeWarning, stacklevel=2)
        _loaded[compiler] = kernels
        return kernels


class DecodeKernels:
    """Tensor-level entry points to the compiled kernels (contiguous CPU tensors of one dtype, fp32 or bf16).

    Activations are feature-major, ``[F, N]`` for ``F`` features of ``N`` rows (sequences): the layout of
    ``W @ x`` with ``x [in, N]``, which the decode GEMMs compute without a transpose. ``d`` is the hidden
    size, ``H``/``H_kv`` the query/key-value heads of size ``D``, ``L`` the cache slots. No checks beyond
    what the caller guarantees: the backend calls these with tensors it allocated or computed itself.
    """

    DTYPES = tuple(_SUFFIX)

    def __init__(self, lib: ctypes.CDLL):
        self.max_head_dim = int(lib.alignkit_max_head_dim())
        self._gemm = None  # the fp32 decode GEMM, where the compiler has GCC's vector extension
        if int(lib.alignkit_has_gemm()):
            self._gemm = lib.gemm_f32
            self._gemm.argtypes, self._gemm.restype = (_P, _P, _L, _P, _P, _L, _L, _L, _L), None
        self._layers = None  # every layer of an fp32 decode step in one call (GCC builds)
        if int(lib.alignkit_has_fused_layers()):
            self._layers = lib.decode_layers_f32
            self._layers.argtypes = (_L, _P, _P, _P, _P, _P, _P, _P, _P, _P, _L, _L, _L, _L, _L, _L, _L, _L, _L,
                                     _F, _L)
            self._layers.restype = None
        self._fn: dict[tuple[str, torch.dtype], ctypes._CFuncPtr] = {}
        for dtype, suffix in _SUFFIX.items():
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, f"{name}_{suffix}")
                fn.argtypes, fn.restype = argtypes, _RESTYPES.get(name)
                self._fn[name, dtype] = fn

    def add_rms_norm(self, h: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
                     out: torch.Tensor) -> torch.Tensor:
        """``h += residual`` (in place, if given), then ``out = weight * rms_norm(h)`` over the features of each
        row. ``h``, ``residual``, ``out``: ``[d, N]``; ``weight``: ``[d]``. Returns ``out``."""
        d, n = h.shape
        self._fn["add_rms_norm", h.dtype](h.data_ptr(), None if residual is None else residual.data_ptr(),
                                          weight.data_ptr(), out.data_ptr(), n, d, eps)
        return out

    def rope_to_cache(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos_table: torch.Tensor,
                      sin_table: torch.Tensor, positions: torch.Tensor, q_out: torch.Tensor,
                      cache_k: torch.Tensor, cache_v: torch.Tensor, slot: int) -> torch.Tensor:
        """RoPE of ``q [H*D, N]`` into ``q_out [N, H, D]`` and of ``k [H_kv*D, N]`` into ``cache_k[:, :, slot]``;
        ``v [H_kv*D, N]`` copied to ``cache_v[:, :, slot]``. cos/signed-sin tables ``[positions, D]``,
        ``positions [N]`` (int64), caches ``[N, H_kv, L, D]``. Returns ``q_out``."""
        n, heads, head_dim = q_out.shape
        self._fn["rope_to_cache", q.dtype](
            q.data_ptr(), k.data_ptr(), v.data_ptr(), cos_table.data_ptr(), sin_table.data_ptr(),
            positions.data_ptr(), q_out.data_ptr(), cache_k.data_ptr(), cache_v.data_ptr(),
            n, heads, cache_k.shape[1], head_dim, cache_k.shape[2], slot)
        return q_out

    @staticmethod
    def attention_workspace(rows: int, heads: int, head_dim: int, slots: int) -> torch.Tensor:
        """The fp32 work buffer :meth:`decode_attention` needs for ``rows`` x ``heads`` queries of size
        ``head_dim`` over caches of ``slots`` slots (each query scaled, and a score per slot)."""
        return torch.empty(rows * heads * (slots + head_dim), dtype=torch.float32)

    def decode_attention(self, q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                         key_mask: torch.Tensor | None, span: int, scale: float, out: torch.Tensor,
                         workspace: torch.Tensor) -> torch.Tensor:
        """Softmax attention of ``q [N, H, D]`` over slots ``[0, span)`` of the caches ``[N, H_kv, L, D]`` where
        ``key_mask [N, L]`` (bool; None = all) allows; ``out [N, H*D]`` (row-major, as the next GEMM reads it
        through ``out.t()``). (row, key/value head) pairs are split over torch's intra-op threads;
        ``workspace`` from :meth:`attention_workspace`. Returns ``out``."""
        n, heads, head_dim = q.shape
        mask_ptr, mask_sn = (None, 0) if key_mask is None else (key_mask.data_ptr(), key_mask.stride(0))
        threads = torch.get_num_threads() if n * heads * span * head_dim >= 1 << 15 else 1
        self._fn["decode_attention", q.dtype](
            q.data_ptr(), cache_k.data_ptr(), cache_v.data_ptr(), mask_ptr, mask_sn, out.data_ptr(), n, heads,
            cache_k.shape[1], head_dim, cache_k.shape[2], span, scale, workspace.data_ptr(), threads)
        return out

    @property
    def has_linear(self) -> bool:
        """Whether :meth:`linear` is available (fp32 only; GCC builds)."""
        return self._gemm is not None

    def linear(self, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``weight [M, K] @ x [K, N] (+ bias [M, 1])`` in fp32 as a new ``[M, N]`` tensor: the decode GEMM of
        a few columns (see ``gemm_f32`` in decode_kernels.c: each weight read once, the next rows prefetched;
        1.4x MKL's speed on SmolLM2's shapes at N = 16, 1.6x at 64). ``x`` is copied to rows of a multiple of
        16 columns when it is not already so laid out."""
        k, n = x.shape
        padded = -(-n // 16) * 16
        if x.stride() != (padded, 1):
            x = x.new_zeros((k, padded)).narrow(1, 0, n).copy_(x)
        out = torch.empty((weight.shape[0], n), dtype=torch.float32)
        threads = torch.get_num_threads() if weight.numel() * n >= 1 << 16 else 1
        self._gemm(weight.data_ptr(), x.data_ptr(), padded, None if bias is None else bias.data_ptr(),
                   out.data_ptr(), weight.shape[0], k, n, threads)
        return out

    def fused_layers(self, weights: list[list[torch.Tensor | None]], eps: list[tuple[float, float]],
                     caches: list[tuple[torch.Tensor, torch.Tensor]], step_buffers: tuple) -> FusedLayers | None:
        """The state of :meth:`FusedLayers.step`, or None where this build has no fused fp32 step.
        ``step_buffers``: the backend's ``x [d, N]``, ``q_rot [N, H, D]``, ``attn [N, H*D]`` and attention
        workspace, which the fused step uses too. ``weights``: per layer the input norm's, the post-attention
        norm's, then the q, k, v, o, gate, up and down projections' weights, and their seven biases (None:
        none), every one contiguous fp32; ``eps``: per layer the two norms' epsilons; ``caches``: per layer the key
        and value caches ``[N, H_kv, L, D]``."""
        if self._layers is None:
            return None
        return FusedLayers(self._layers, weights, eps, caches, step_buffers)

    def silu_mul(self, gate: torch.Tensor, up: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = silu(gate) * up``, elementwise over tensors of one shape and layout. Returns ``out``."""
        self._fn["silu_mul", out.dtype](gate.data_ptr(), up.data_ptr(), out.data_ptr(), out.numel())
        return out

    def sample_rows(self, logits: torch.Tensor, temperature: float, uniforms: torch.Tensor,
                    forbid: torch.Tensor | None, token: torch.Tensor, logp: torch.Tensor) -> None:
        """One draw per row of ``logits [N, V]`` (any strides; the decode step's are a transposed view) from
        softmax(logits / temperature), by inverse CDF with ``uniforms [N]`` (float64 in [0, 1)), ids flagged
        in ``forbid [V]`` (uint8/bool, None: none) never drawn; the same draw as
        :func:`~alignkit.generation.base.sample_from_probs` on those probabilities. Writes ``token [N]``
        (int64) and ``logp [N]`` (float32): the token's log-prob under the full tempered distribution."""
        n, vocab = logits.shape
        threads = torch.get_num_threads() if n * vocab >= 1 << 16 else 1
        if self._fn["sample_rows", logits.dtype](
                logits.data_ptr(), logits.stride(0), logits.stride(1), n, vocab, temperature, uniforms.data_ptr(),
                None if forbid is None else forbid.data_ptr(), token.data_ptr(), logp.data_ptr(), threads):
            raise MemoryError(f"sample_rows: no memory for its [{vocab}, 16] float buffer")


class FusedLayers:
    """Every layer of one fp32 decode step in one native call (``decode_layers_f32``): the kernels of
    :class:`DecodeKernels` and its GEMM in the order ``LlamaStaticCacheBackend._decode_native`` calls them,
    with the per-call pointers and step buffers made once per generate call. Made by
    :meth:`DecodeKernels.fused_layers`."""

    def __init__(self, fn, weights, eps, caches, step_buffers):
        self._fn = fn
        self.x, self.q_rot, self.attn, self.work = step_buffers  # shared with the backend's Python path
        first = weights[0]
        d, n = self.x.shape
        hd, kv, inter = first[2].shape[0], first[3].shape[0], first[6].shape[0]
        _, kv_heads, slots, head_dim = caches[0][0].shape
        heads = hd // head_dim
        new = first[2].new_empty
        self.q, self.k, self.v, self.o = new((hd, n)), new((kv, n)), new((kv, n)), new((d, n))
        self.g, self.u, self.mlp = new((inter, n)), new((inter, n)), new((d, n))
        self.pad = new((max(d, hd, inter), -(-n // 16) * 16))
        buffers = (self.x, self.q, self.k, self.v, self.q_rot, self.attn, self.o, self.g, self.u, self.mlp,
                   self.pad, self.work)

        def pointers(tensors):
            return (ctypes.c_void_p * len(tensors))(*(None if t is None else t.data_ptr() for t in tensors))

        self._weights = pointers([t for layer in weights for t in layer])
        self._eps = (ctypes.c_float * (2 * len(eps)))(*(e for pair in eps for e in pair))
        self._caches = pointers([t for pair in caches for t in pair])
        self._buffers = pointers(buffers)
        self._keep = (weights, caches, buffers)  # the pointers' tensors stay alive as long as this object
        self.layers, self.n, self.shape = len(weights), n, (d, heads, kv_heads, head_dim, inter, slots)

    def step(self, h: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor, positions: torch.Tensor,
             key_mask: torch.Tensor | None, slot: int, scale: float) -> torch.Tensor:
        """Run every layer on the residual stream ``h [d, N]`` (updated in place) for the token written at
        cache ``slot``; returns the last layer's MLP output ``[d, N]`` (to add to ``h`` before the final
        norm), valid until the next step."""
        d, heads, kv_heads, head_dim, inter, slots = self.shape
        mask_ptr, mask_sn = (None, 0) if key_mask is None else (key_mask.data_ptr(), key_mask.stride(0))
        self._fn(self.layers, self._weights, self._eps, self._caches, h.data_ptr(), self._buffers,
                 cos_table.data_ptr(), sin_table.data_ptr(), positions.data_ptr(), mask_ptr, mask_sn, self.n, d,
                 heads, kv_heads, head_dim, inter, slots, slot, scale, torch.get_num_threads())
        return self.mlp
