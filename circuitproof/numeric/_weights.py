"""Canonical weights: the tensors of one :class:`~circuitproof.Arch`, in DESIGN.md's row convention.

========== ================================ =========================================
name       shape                            role
========== ================================ =========================================
W_E        [d_vocab, d_model]               token embedding (row t is token t)
W_pos      [n_ctx, d_model]                 learned positions (positional="learned")
W_Q        [layer, head, d_model, d_head]   q = x W_Q + b_Q
W_K, W_V   [layer, kv_head, d_model, d_head] k = x W_K + b_K, v = x W_V + b_V
W_O        [layer, head, d_head, d_model]   head_h = z_h W_O[h]; W_OV = W_V W_O
b_Q        [layer, head, d_head]            (q_bias)
b_K, b_V   [layer, kv_head, d_head]         (k_bias, v_bias)
b_O        [layer, d_model]                 (o_bias) added once per layer
W_in       [layer, d_model, d_mlp]          MLP input (the "up" map if gated)
W_gate     [layer, d_model, d_mlp]          gated MLP: act(x W_gate) * (x W_in)
W_out      [layer, d_mlp, d_model]          MLP output
b_in, b_gate [layer, d_mlp]; b_out [layer, d_model]   (mlp_bias)
ln_<slot>_w, ln_<slot>_b  [layer, d_model]  per-layer norms, slot in Arch.norm_slots()
ln_final_w, ln_final_b    [d_model]         (final_norm)
ln_embed_w, ln_embed_b    [d_model]         (embed_norm)
ln_q_w, ln_k_w   [layer, head*d_head] or [layer, d_head]  QK-norm ("all_heads" / "per_head")
W_T, b_T   [d_model, d_model], [d_model]    unembed_transform, with ln_transform_w/_b
W_U        [d_model, d_vocab]               logits = x W_U + b_U (tied: W_E^T, not stored)
b_U        [d_vocab]                        (unembed_bias)
========== ================================ =========================================

LayerNorm slots have ``_w`` and ``_b``; RMSNorm slots only ``_w``. A tensor the
architecture does not have is absent, never a zero placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .. import ShapeError, WeightsError
from ..arch import Arch

__all__ = ["Weights", "weight_shapes"]


def _norm_tensors(arch: Arch, name: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    out = {f"ln_{name}_w": shape}
    if arch.norm == "layernorm":
        out[f"ln_{name}_b"] = shape
    return out


def weight_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """Every tensor ``arch`` has, name -> shape, in forward order (see the module table)."""
    L, H, K = arch.n_layers, arch.n_heads, arch.n_kv_heads
    D, Dh, M, V = arch.d_model, arch.d_head, arch.d_mlp, arch.d_vocab
    s: dict[str, tuple[int, ...]] = {"W_E": (V, D)}
    if arch.positional == "learned":
        s["W_pos"] = (arch.n_ctx, D)
    if arch.embed_norm:
        s.update(_norm_tensors(arch, "embed", (D,)))
    for slot in arch.norm_slots():
        s.update(_norm_tensors(arch, slot, (L, D)))
    s.update(W_Q=(L, H, D, Dh), W_K=(L, K, D, Dh), W_V=(L, K, D, Dh), W_O=(L, H, Dh, D))
    if arch.q_bias:
        s["b_Q"] = (L, H, Dh)
    if arch.k_bias:
        s["b_K"] = (L, K, Dh)
    if arch.v_bias:
        s["b_V"] = (L, K, Dh)
    if arch.o_bias:
        s["b_O"] = (L, D)
    if arch.qk_norm != "none":
        width_q, width_k = (H * Dh, K * Dh) if arch.qk_norm == "all_heads" else (Dh, Dh)
        s.update(_norm_tensors(arch, "q", (L, width_q)))
        s.update(_norm_tensors(arch, "k", (L, width_k)))
    if arch.has_mlp:
        s["W_in"] = (L, D, M)
        if arch.gated:
            s["W_gate"] = (L, D, M)
        s["W_out"] = (L, M, D)
        if arch.mlp_bias:
            s["b_in"] = (L, M)
            if arch.gated:
                s["b_gate"] = (L, M)
            s["b_out"] = (L, D)
    if arch.final_norm:
        s.update(_norm_tensors(arch, "final", (D,)))
    if arch.unembed_transform:
        s.update(W_T=(D, D), b_T=(D,))
        s.update(_norm_tensors(arch, "transform", (D,)))
    if not arch.tied:
        s["W_U"] = (D, V)
    if arch.unembed_bias:
        s["b_U"] = (V,)
    return s


class Weights(Mapping[str, torch.Tensor]):
    """The canonical tensors of one architecture, checked on construction.

    A read-only mapping ``name -> tensor`` with attribute access (``w.W_Q``).
    ``w.W_U`` is ``W_E^T`` when the architecture is tied. Tensors share one
    dtype and device. Construction raises :class:`~circuitproof.ShapeError`
    naming the tensor, the expected and the actual shape, and
    :class:`~circuitproof.WeightsError` for a missing or extra tensor.
    """

    __slots__ = ("arch", "_tensors")

    def __init__(self, arch: Arch, tensors: Mapping[str, torch.Tensor]):
        expected = weight_shapes(arch)
        missing = [n for n in expected if n not in tensors]
        extra = [n for n in tensors if n not in expected]
        if missing or extra:
            raise WeightsError(
                f"Weights for {arch!r}: missing {missing}, unexpected {extra}; "
                "weight_shapes(arch) lists the tensors this architecture has"
            )
        dtypes = {t.dtype for t in tensors.values()}
        if len(dtypes) != 1:
            raise WeightsError(f"Weights: tensors have mixed dtypes {sorted(map(str, dtypes))}; cast them to one")
        for name, shape in expected.items():
            actual = tuple(tensors[name].shape)
            if actual != shape:
                raise ShapeError(f"Weights: {name} has shape {list(actual)}, expected {list(shape)} for {arch!r}")
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "_tensors", {n: tensors[n] for n in expected})

    # --------------------------------------------------------------- mapping
    def __getitem__(self, name: str) -> torch.Tensor:
        if name == "W_U" and self.arch.tied:
            return self._tensors["W_E"].T
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} for {self.arch!r} has no tensor {name!r}") from None

    def get(self, name: str, default: object = None) -> torch.Tensor | object:
        """``self[name]``, or ``default`` for a tensor the architecture does not have (one dict lookup, no exception)."""
        return self[name] if name in self._tensors or name == "W_U" else default  # W_U: tied, __getitem__'s W_E^T

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Weights are read-only; build new ones with Weights(arch, {...})")

    def __repr__(self) -> str:
        return f"Weights({self.arch!r}, {len(self)} tensors, {self.dtype})"

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self._tensors.values())).dtype

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Weights:
        """A copy in ``dtype`` and on ``device``."""
        return Weights(self.arch, {n: t.to(dtype=dtype, device=device) for n, t in self._tensors.items()})

    def replace(self, **tensors: torch.Tensor) -> Weights:
        """A copy with some tensors replaced (checked again)."""
        return Weights(self.arch, {**self._tensors, **tensors})

    def equal(self, other: Weights) -> bool:
        """Same Arch and bit-identical tensors."""
        return self.arch == other.arch and all(torch.equal(self._tensors[n], other._tensors[n]) for n in self._tensors)

    # ---------------------------------------------------------------- random
    @classmethod
    def random(cls, arch: Arch, seed: int = 0, dtype: torch.dtype = torch.float64) -> Weights:
        """Deterministic random weights in which every parameter is non-trivial.

        Matrices are Gaussian with standard deviation ``1/sqrt(fan_in)`` so that
        activations stay O(1) at any depth (``W_E`` and ``W_pos`` are standard
        normal). Biases (attention, MLP, unembedding, norm) have random signs
        and magnitudes in [0.2, 0.7]. Effective norm gains lie in [0.3, 0.8] or
        [1.2, 2.0], never 1; a ``1 + w`` gain stores ``w = gain - 1``.
        Draws depend only on (arch, seed, name): adding a feature never changes
        the other tensors.
        """
        tensors, gen = {}, torch.Generator()
        for name, shape in weight_shapes(arch).items():
            gen.manual_seed(_stable_hash(f"{seed}:{name}"))  # each tensor's stream restarts from its own seed
            t = _draw(name, shape, gen, arch)
            tensors[name] = t if dtype == torch.float64 else t.to(dtype)
        return cls(arch, tensors)

    # -------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> None:
        """Write the tensors to ``path`` (safetensors), the Arch in the metadata."""
        from safetensors.torch import save_file

        meta = {"circuitproof.arch": json.dumps(_arch_to_json(self.arch))}
        save_file({n: t.contiguous() for n, t in self._tensors.items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> Weights:
        """Read weights written by :meth:`save` (tensors and Arch, bit for bit)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "circuitproof.arch" not in meta:
                raise WeightsError(f"{path}: no 'circuitproof.arch' metadata; was it written by Weights.save?")
            arch = Arch(**_arch_from_json(json.loads(meta["circuitproof.arch"])))
            tensors = {n: f.get_tensor(n).clone() for n in f.keys()}  # fresh, aligned memory
        return cls(arch, tensors)


def _stable_hash(text: str) -> int:
    """A 63-bit seed from text, stable across processes (unlike ``hash``)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def _draw(name: str, shape: tuple[int, ...], gen: torch.Generator, arch: Arch) -> torch.Tensor:
    normal = torch.randn(shape, generator=gen, dtype=torch.float64)
    if name.startswith("ln_") and name.endswith("_w"):
        # effective gain in [1.2, 2.0] or [0.3, 0.8]: never 1, never 0
        u = torch.rand(shape, generator=gen, dtype=torch.float64)
        sign = torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5
        gain = torch.where(sign, 1.2 + 0.8 * u, 0.3 + 0.5 * u)
        return gain - 1.0 if arch.norm_gain == "one_plus_w" else gain
    if name.startswith("b_") or (name.startswith("ln_") and name.endswith("_b")):
        # |b| in [0.2, 0.7]: never near zero
        u = torch.rand(shape, generator=gen, dtype=torch.float64)
        return torch.sign(normal) * (0.2 + 0.5 * u)
    if name in ("W_E", "W_pos"):
        return normal
    fan_in = shape[-2]
    return normal / fan_in**0.5


def _tensor_property(name: str) -> property:
    """``w.<name>``: the tensor from its dict in one lookup (an absent one falls through to ``__getattr__``'s AttributeError)."""

    def tensor(self: Weights) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise AttributeError(name) from None

    return property(tensor, doc=f"The tensor {name} (module table).")


_SLOTS = ("embed", "attn_in", "attn_out", "mlp_in", "mlp_out", "q", "k", "final", "transform")
for _name in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "W_gate", "W_out", "b_in", "b_gate",
              "b_out", "W_T", "b_T", "b_U", *(f"ln_{slot}_{part}" for slot in _SLOTS for part in "wb")):
    setattr(Weights, _name, _tensor_property(_name))  # W_U is not among them: tied, it is W_E^T (__getitem__)
del _name


def _arch_to_json(arch: Arch) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(arch)


def _arch_from_json(data: dict[str, object]) -> dict[str, object]:
    if "sliding_layers" in data:
        data["sliding_layers"] = tuple(data["sliding_layers"])
    return data
