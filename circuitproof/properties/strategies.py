"""Public Hypothesis strategies for small transformers of the whole family.

``archs(...)`` draws an :class:`~circuitproof.Arch`, ``weights(arch)`` its
:class:`~circuitproof.numeric.Weights` (from a drawn seed, so drawing is fast),
``tokens(arch)`` a batch of token ids. Every strategy is lazy, takes keyword-only
bounds with small defaults, validates them with ``name=value`` messages, and has
a ``repr`` that reproduces the call.

Shrinking: each choice is drawn from a list ordered simplest first, and sizes
shrink toward their lower bounds, so a failing example shrinks toward one layer,
one head, the smallest dimensions and the fewest features on.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from ..arch import Arch
from ..numeric import Weights

__all__ = ["archs", "family_archs", "weights", "tokens"]

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
    Shrinks toward ``Arch(positional='none', norm='none', ...)`` with one layer,
    one head and the smallest dimensions.
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

    n_layers = pick("n_layers", st.integers(1, max_layers))
    n_kv_heads = pick("n_kv_heads", st.integers(1, max_heads))
    group = pick("_group", st.integers(1, max(1, max_heads // n_kv_heads)))
    n_heads = fixed.get("n_heads", n_kv_heads * group)
    if n_heads % n_kv_heads:
        n_kv_heads = n_heads
    positional = pick("positional", st.sampled_from(_POSITIONAL))
    d_head = pick("d_head", st.integers(1, max_d_head // 2).map(lambda h: 2 * h) if positional == "rotary" else st.integers(1, max_d_head))
    rotary = {}
    if positional == "rotary":
        rotary_dim = pick("rotary_dim", st.one_of(st.none(), st.integers(1, d_head // 2).map(lambda r: 2 * r)))
        rotary = dict(
            rotary_dim=rotary_dim,
            rotary_base=pick("rotary_base", st.sampled_from([10000.0, 100.0])),
            rotary_style=pick("rotary_style", st.sampled_from(["half", "interleaved"])),
        )
    norm = pick("norm", st.sampled_from(_NORM))
    attn_only = pick("attn_only", st.booleans())
    parallel = False if attn_only else pick("parallel", st.booleans())
    placement = "pre"
    if norm != "none" and not parallel:
        placement = pick("norm_placement", st.sampled_from(_PLACEMENT))
    norm_fields = {}
    if norm != "none":
        norm_fields = dict(
            norm_placement=placement,
            norm_eps=pick("norm_eps", st.sampled_from([1e-5, 1e-6])),
            norm_gain=pick("norm_gain", st.sampled_from(["w", "one_plus_w"])) if norm == "rmsnorm" else "w",
            final_norm=False if placement == "post" else pick("final_norm", st.booleans()),
            embed_norm=pick("embed_norm", st.booleans()),
            qk_norm=pick("qk_norm", st.sampled_from(["none", "all_heads", "per_head"])),
            parallel_shared_norm=parallel and pick("parallel_shared_norm", st.booleans()),
            unembed_transform=(not attn_only) and pick("unembed_transform", st.booleans()),
        )
    mlp = {}
    if not attn_only:
        mlp = dict(
            d_mlp=pick("d_mlp", st.integers(1, 2 * max_d_model)),
            gated=pick("gated", st.booleans()),
            act=pick("act", st.sampled_from(_ACT)),
            mlp_bias=pick("mlp_bias", st.booleans()),
        )
    window = {}
    if pick("_sliding", st.booleans()):
        layers = pick("sliding_layers", st.lists(st.integers(0, n_layers - 1), min_size=1, unique=True).map(lambda xs: tuple(sorted(xs))))
        window = dict(sliding_window=pick("sliding_window", st.integers(1, 4)), sliding_layers=layers)
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
        attn_scale=pick("attn_scale", st.one_of(st.none(), st.sampled_from([0.5, 1.0]))),
        attn_softcap=pick("attn_softcap", st.one_of(st.none(), st.sampled_from([5.0, 1.0]))),
        positional=positional,
        norm=norm,
        attn_only=attn_only,
        parallel=parallel,
        tied=pick("tied", st.booleans()),
        unembed_bias=pick("unembed_bias", st.booleans()),
        logit_softcap=pick("logit_softcap", st.one_of(st.none(), st.sampled_from([10.0, 2.0]))),
        embed_scale=pick("embed_scale", st.sampled_from([1.0, 2.0])),
        **rotary,
        **norm_fields,
        **mlp,
        **window,
    )
    fields.update({k: v for k, v in fixed.items() if not k.startswith("_")})
    return Arch(**fields)


def family_archs(family: str, **bounds: object) -> st.SearchStrategy[Arch]:
    """Architectures that the transformers family ``family`` can express.

    Draws ``archs(**adapter.pinned, **bounds)``, makes coupled switches agree with
    ``adapter.project`` (e.g. Llama's one ``attention_bias`` for q, k, v and o),
    and keeps what ``adapter.cannot_express`` accepts. Shrinks as ``archs``.
    """
    from ..numeric.adapters import adapter_class

    cls = adapter_class(family)
    return archs(**{**cls.pinned, **bounds}).map(cls.project).filter(lambda a: cls.cannot_express(a) is None)


def weights(arch: Arch, *, dtype: torch.dtype = torch.float64) -> st.SearchStrategy[Weights]:
    """``Weights.random(arch, seed)`` for a drawn seed; shrinks toward seed 0."""
    if not isinstance(arch, Arch):
        raise ValueError(f"weights: arch={arch!r} must be an Arch")
    return st.integers(0, 2**32 - 1).map(lambda seed: Weights.random(arch, seed, dtype=dtype))


@st.composite
def tokens(draw: st.DrawFn, arch: Arch, *, max_batch: int = 2, min_pos: int = 1, max_pos: int | None = None) -> torch.Tensor:
    """A ``[batch, pos]`` long tensor of ids in ``[0, d_vocab)``, pos <= n_ctx; shrinks toward one short sequence of zeros."""
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
