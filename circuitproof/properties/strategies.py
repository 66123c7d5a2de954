"""Public Hypothesis strategies for small transformers of the whole family.

``archs(...)`` draws an :class:`~circuitproof.Arch`, ``weights(arch)`` its
:class:`~circuitproof.numeric.Weights` (from a drawn seed, so drawing is fast),
``tokens(arch)`` a batch of token ids, ``models(family=None)`` a :class:`Model`: an
architecture, its weights and a runnable target (the reference, or a real
transformers model of a family built through the adapters). Every strategy is
lazy, takes keyword-only bounds with small defaults, validates them on the first
draw with ``name=value`` messages, and has a ``repr`` that reproduces the call.

Shrinking: each choice is drawn from a list ordered simplest first, sizes shrink
toward their lower bounds, and ``archs`` draws the same number of choices whatever
their values, so a failing example shrinks toward one layer, one head, the smallest
dimensions and the fewest features on; ``models`` shrinks its target toward the
reference and its seed toward 0.
"""

from __future__ import annotations

import functools

import torch
from hypothesis import strategies as st

from .. import UnsupportedError
from ..arch import Arch
from ..numeric import Trace, Weights, run

__all__ = ["archs", "family_archs", "weights", "tokens", "models", "Model"]

_POSITIONAL = ("none", "learned", "rotary")
_NORM = ("none", "layernorm", "rmsnorm")
_PLACEMENT = ("pre", "post", "output", "sandwich")
_ACT = ("relu", "gelu", "gelu_tanh", "silu")


def _check_bound(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


@st.composite
def archs(
    draw: st.DrawFn,
    *,
    max_layers: int = 3,
    max_heads: int = 4,
    max_d_model: int = 32,
    max_d_head: int = 8,
    max_vocab: int = 24,
    **fixed: object,
) -> Arch:
    """Valid architectures over the whole family, at small sizes.

    ``fixed`` pins fields (``archs(norm="rmsnorm", attn_only=True)``) to a value
    or to a strategy drawn first (``archs(act=st.sampled_from(["silu", "relu"]))``); every
    other field is drawn, and combinations the family cannot express are never
    produced (parallel blocks are pre-norm, post-norm has no final norm, ...).
    Shrinks toward ``Arch(d_model=2, d_head=1, d_mlp=1, d_vocab=2, n_ctx=2,
    positional='none', norm='none', act='relu', mlp_bias=False)``: one layer, one
    head, the smallest dimensions, the fewest features on. Every field's choice is
    drawn whether or not the architecture uses it (an attention-only model still
    draws, and ignores, its MLP's), so the number of choices never depends on their
    values and Hypothesis' shrinker, which prefers fewer choices, shrinks values.
    """
    for name, value, low in (
        ("max_layers", max_layers, 1),
        ("max_heads", max_heads, 1),
        ("max_d_model", max_d_model, 2),
        ("max_d_head", max_d_head, 2),
        ("max_vocab", max_vocab, 2),
    ):
        _check_bound(name, value, low)
    unknown = {k for k in fixed if not k.startswith("_")} - set(Arch.__dataclass_fields__)
    if unknown:
        raise ValueError(f"archs: {sorted(unknown)} are not Arch fields")
    fixed = {k: draw(v) if isinstance(v, st.SearchStrategy) else v for k, v in fixed.items()}

    def pick(name: str, strategy: st.SearchStrategy) -> object:
        return fixed[name] if name in fixed else draw(strategy)

    # sizes and heads: the group is clamped so that n_heads <= max_heads
    n_layers = pick("n_layers", st.integers(1, max_layers))
    n_kv_heads = pick("n_kv_heads", st.integers(1, max_heads))
    group = pick("_group", st.integers(1, max_heads))
    group = max(1, min(group, max_heads // n_kv_heads))
    n_heads = fixed.get("n_heads", n_kv_heads * group)
    if n_heads % n_kv_heads:
        n_kv_heads = n_heads
    positional = pick("positional", st.sampled_from(_POSITIONAL))
    d_head = pick("d_head", st.integers(1, max_d_head))
    if positional == "rotary" and "d_head" not in fixed:
        d_head = 2 * max(1, d_head // 2)  # rotary rotates pairs
    rotary_half = pick("_rotary_half", st.integers(0, max_d_head // 2))  # rotary_dim / 2; 0 means the whole head
    rotary = {}
    if positional == "rotary":
        rotary_dim = fixed.get("rotary_dim", min(2 * rotary_half, d_head) or None)
        rotary = dict(
            rotary_dim=rotary_dim,
            rotary_base=pick("rotary_base", st.sampled_from([10000.0, 100.0])),
            rotary_style=pick("rotary_style", st.sampled_from(["half", "interleaved"])),
        )
    else:
        pick("rotary_base", st.sampled_from([10000.0, 100.0])), pick("rotary_style", st.sampled_from(["half", "interleaved"]))
    # norms and blocks: every switch drawn, applied where the family allows it
    norm = pick("norm", st.sampled_from(_NORM))
    attn_only = pick("attn_only", st.booleans())
    parallel = pick("parallel", st.booleans()) and not attn_only
    placement = pick("norm_placement", st.sampled_from(_PLACEMENT))
    if norm == "none" or parallel:
        placement = "pre"
    drawn_norm = dict(
        norm_eps=pick("norm_eps", st.sampled_from([1e-5, 1e-6])),
        norm_gain=pick("norm_gain", st.sampled_from(["w", "one_plus_w"])),
        final_norm=pick("final_norm", st.booleans()),
        embed_norm=pick("embed_norm", st.booleans()),
        qk_norm=pick("qk_norm", st.sampled_from(["none", "all_heads", "per_head"])),
        parallel_shared_norm=pick("parallel_shared_norm", st.booleans()),
        unembed_transform=pick("unembed_transform", st.booleans()),
    )
    norm_fields = {}
    if norm != "none":
        norm_fields = dict(drawn_norm, norm_placement=placement)
        norm_fields["norm_gain"] = drawn_norm["norm_gain"] if norm == "rmsnorm" else "w"
        norm_fields["final_norm"] = False if placement == "post" else drawn_norm["final_norm"]
        norm_fields["parallel_shared_norm"] = parallel and drawn_norm["parallel_shared_norm"]
        norm_fields["unembed_transform"] = (not attn_only) and drawn_norm["unembed_transform"]
    drawn_mlp = dict(
        d_mlp=pick("d_mlp", st.integers(1, 2 * max_d_model)),
        gated=pick("gated", st.booleans()),
        act=pick("act", st.sampled_from(_ACT)),
        mlp_bias=pick("mlp_bias", st.booleans()),
    )
    mlp = {} if attn_only else drawn_mlp
    # sliding window: the layers as a bit mask (one choice, whatever the depth)
    sliding = pick("_sliding", st.booleans())
    mask = pick("_sliding_mask", st.integers(1, 2**n_layers - 1))
    layers = fixed.get("sliding_layers", tuple(l for l in range(n_layers) if mask >> l & 1))
    size = pick("sliding_window", st.integers(1, 4))
    window = dict(sliding_window=size, sliding_layers=layers) if sliding else {}
    fields = dict(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_model=pick("d_model", st.integers(2, max_d_model)),
        d_head=d_head,
        d_vocab=pick("d_vocab", st.integers(2, max_vocab)),
        n_ctx=pick("n_ctx", st.integers(1, 8).map(lambda n: 2 * n)),
        causal=pick("causal", st.sampled_from([True, False])),
        q_bias=pick("q_bias", st.booleans()),
        k_bias=pick("k_bias", st.booleans()),
        v_bias=pick("v_bias", st.booleans()),
        o_bias=pick("o_bias", st.booleans()),
        attn_scale=pick("attn_scale", st.sampled_from([None, 0.5, 1.0])),
        attn_softcap=pick("attn_softcap", st.sampled_from([None, 5.0, 1.0])),
        positional=positional,
        norm=norm,
        attn_only=attn_only,
        parallel=parallel,
        tied=pick("tied", st.booleans()),
        unembed_bias=pick("unembed_bias", st.booleans()),
        logit_softcap=pick("logit_softcap", st.sampled_from([None, 10.0, 2.0])),
        embed_scale=pick("embed_scale", st.sampled_from([1.0, 2.0])),
        **rotary,
        **norm_fields,
        **mlp,
        **window,
    )
    fields.update({k: v for k, v in fixed.items() if not k.startswith("_")})
    return Arch(**fields)


@st.composite
def family_archs(draw: st.DrawFn, family: str, **bounds: object) -> Arch:
    """Architectures that the transformers family ``family`` can express.

    Draws ``archs(**adapter.pinned, **bounds)``, makes coupled switches agree with
    ``adapter.project`` (e.g. Llama's one ``attention_bias`` for q, k, v and o),
    and keeps what ``adapter.cannot_express`` accepts. Shrinks as ``archs``.
    """
    from ..numeric.adapters import adapter_class

    cls = adapter_class(family)
    return draw(archs(**{**cls.pinned, **bounds}).map(cls.project).filter(lambda a: cls.cannot_express(a) is None))


@st.composite
def weights(draw: st.DrawFn, arch: Arch, *, dtype: torch.dtype = torch.float64) -> Weights:
    """``Weights.random(arch, seed)`` for a drawn seed; shrinks toward seed 0."""
    if not isinstance(arch, Arch):
        raise ValueError(f"weights: arch={arch!r} must be an Arch")
    return Weights.random(arch, draw(st.integers(0, 2**32 - 1)), dtype=dtype)


@st.composite
def tokens(draw: st.DrawFn, arch: Arch, *, max_batch: int = 2, min_pos: int = 1, max_pos: int | None = None) -> torch.Tensor:
    """A ``[batch, pos]`` long tensor of ids in ``[0, d_vocab)``, pos <= n_ctx, from a drawn seed.

    Shrinks toward one sequence of ``min_pos`` positions drawn with seed 0.
    """
    _check_bound("max_batch", max_batch, 1)
    _check_bound("min_pos", min_pos, 1)
    top = arch.n_ctx if max_pos is None else min(max_pos, arch.n_ctx)
    if min_pos > top:
        raise ValueError(f"tokens: min_pos={min_pos} exceeds max_pos/n_ctx={top}")
    batch = draw(st.integers(1, max_batch))
    pos = draw(st.integers(min_pos, top))
    seed = draw(st.integers(0, 2**32 - 1))
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, arch.d_vocab, (batch, pos), generator=gen)


class Model:
    """An architecture, its weights (``Weights.random(arch, seed)``) and a target that runs them.

    ``target`` is ``"reference"`` (:func:`~circuitproof.numeric.run`) or a family of
    :data:`~circuitproof.numeric.adapters.FAMILIES`, built once with
    ``build(arch, weights, family)`` and traced through its adapter. ``repr`` is a
    valid constructor call, so a failing example can be pasted back.
    """

    def __init__(self, arch: Arch, seed: int = 0, target: str = "reference", dtype: torch.dtype = torch.float64):
        from ..numeric.adapters import FAMILIES

        if not isinstance(arch, Arch):
            raise ValueError(f"Model: arch={arch!r} must be an Arch")
        if target != "reference" and target not in FAMILIES:
            raise ValueError(f"Model: target={target!r} must be 'reference' or one of {FAMILIES}")
        self.arch, self.seed, self.target, self.dtype = arch, seed, target, dtype

    def __repr__(self) -> str:
        dtype = "" if self.dtype == torch.float64 else f", dtype={self.dtype}"
        return f"Model({self.arch!r}, seed={self.seed}, target={self.target!r}{dtype})"

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(repr(self))

    @functools.cached_property
    def weights(self) -> Weights:
        return Weights.random(self.arch, self.seed, dtype=self.dtype)

    @functools.cached_property
    def _adapter(self):
        from ..numeric.adapters import adapt, build

        return adapt(build(self.arch, self.weights, self.target))

    def trace(self, tokens: torch.Tensor) -> Trace:
        """The target's forward pass on ``tokens``."""
        if self.target == "reference":
            return run(self.arch, self.weights, tokens, dtype=self.dtype)
        return self._adapter.trace(tokens)

    def trace_of(self, arch: Arch, weights: Weights, tokens: torch.Tensor) -> Trace:
        """The same target carrying other weights (a transformed model); UnsupportedError if its family cannot express ``arch``."""
        if self.target == "reference":
            return run(arch, weights, tokens, dtype=self.dtype)
        from ..numeric.adapters import adapt, adapter_class, build

        reason = adapter_class(self.target).cannot_express(arch)
        if reason is not None:
            raise UnsupportedError(f"{self.target} cannot express {reason}")
        return adapt(build(arch, weights, self.target)).trace(tokens)

    @property
    def tolerance(self) -> tuple[float, str]:
        """The relative tolerance for checks on this target, and why it has that size."""
        from ._claim import RTOL_FLOAT32, RTOL_FLOAT32_REASON, RTOL_FLOAT64, RTOL_FLOAT64_REASON

        if self.dtype != torch.float64:
            return RTOL_FLOAT32, RTOL_FLOAT32_REASON
        if self.target == "reference":
            return RTOL_FLOAT64, RTOL_FLOAT64_REASON
        from ..numeric.adapters import adapter_class

        steps = adapter_class(self.target).below_dtype_steps
        if not steps:
            return RTOL_FLOAT64, f"{self.target} computes in float64 throughout; " + RTOL_FLOAT64_REASON
        short = "; ".join(step.split(":")[0] for step in steps)
        return RTOL_FLOAT32, f"{self.target} computes {len(steps)} steps in float32 whatever its dtype ({short}); " + RTOL_FLOAT32_REASON

    def check(self, claim, tokens: torch.Tensor, *, assume: bool = True):
        """``claim.check`` on this target's trace of ``tokens``, with its tolerance and its own reruns."""
        rtol, reason = self.tolerance
        return claim.check(self.arch, self.weights, self.trace(tokens), rtol=rtol, rtol_reason=reason,
                           rerun=lambda arch, weights: self.trace_of(arch, weights, tokens), assume=assume)


def _families_for(arch: Arch) -> list[str]:
    """The families that can express ``arch``; none if transformers is not installed."""
    try:
        from ..numeric.adapters import families_for

        return families_for(arch)
    except ImportError:
        return []


@st.composite
def models(draw: st.DrawFn, family: str | None = None, *, dtype: torch.dtype = torch.float64, **constraints: object) -> Model:
    """A :class:`Model`: an Arch, its weights from a drawn seed, and a target.

    ``family=None`` draws ``archs(**constraints)`` and then the reference or any family
    that can express it (``families_for``); ``family="reference"`` only the reference;
    a named family draws ``family_archs(family, **constraints)`` and builds that family.
    Shrinks as ``archs``, the target toward the reference, the seed toward 0.
    """
    from ..numeric.adapters import FAMILIES

    if family is not None and family != "reference" and family not in FAMILIES:
        raise ValueError(f"models: family={family!r} must be None, 'reference' or one of {FAMILIES}")
    if family in (None, "reference"):
        arch = draw(archs(**constraints))
        target = draw(st.sampled_from(["reference", *(_families_for(arch) if family is None else [])]))
    else:
        arch, target = draw(family_archs(family, **constraints)), family
    return Model(arch, draw(st.integers(0, 2**32 - 1)), target, dtype)
