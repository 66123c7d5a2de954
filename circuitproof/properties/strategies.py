"""Public Hypothesis strategies for small transformers of the whole family.

``archs(...)`` draws an :class:`~circuitproof.Arch`, ``weights(arch)`` its
:class:`~circuitproof.numeric.Weights` (from a drawn seed, so drawing is fast),
``tokens(arch)`` a batch of token ids, ``models(family=None)`` a :class:`Model`: an
architecture, its weights and a runnable target (the reference, or a real
transformers model of a family built through the adapters). Every strategy is
lazy, takes keyword-only bounds with small defaults, validates them on the first
draw with ``name=value`` messages, and has a ``repr`` that reproduces the call.

Shrinking: ``archs`` draws the numbers of key/value heads and of query heads per
group as integers and one byte string of fixed length, a byte for each other choice,
and reads each of those choices off its byte monotonically (byte 0 is the simplest: the first
option of a list ordered simplest first, a size's lower bound; the on/off switches are
the bits of three bytes, off = 0). Hypothesis shrinks the bytes of a string one by one
toward 0, so a failing example shrinks toward one layer, one head, the smallest
dimensions and the fewest features on; ``models`` shrinks its target toward the
reference and its seed toward 0.

Speed: every draw costs tens of microseconds in Hypothesis, so strategies are built
once and reused and an architecture is three draws (two head counts and one byte
string for the other 20 choices), not 22; ``tokens(arch)`` is one strategy object per
arguments; a :class:`Model` (``properties/_model.py``) keeps the traces of the tokens it
ran, so that checking every claim (:meth:`Model.check_all`) runs the forward pass once,
and shares its weights with every Model of its architecture and seed.
"""

from __future__ import annotations

import functools

import torch
from hypothesis import strategies as st

from ..arch import Arch
from ..numeric import Weights
from ._model import Model

__all__ = ["archs", "family_archs", "weights", "tokens", "models", "Model"]

_POSITIONAL = ("none", "learned", "rotary")
_NORM = ("none", "layernorm", "rmsnorm")
_PLACEMENT = ("pre", "post", "output", "sandwich")
_ACT = ("relu", "gelu", "gelu_tanh", "silu")


# Strategies are built once and reused: a strategy object validates itself and computes its
# label on first use, which costs more than drawing from it.
_OPTIONS = {"rotary_base": (10000.0, 100.0), "rotary_style": ("half", "interleaved"), "norm_eps": (1e-5, 1e-6),
            "norm_gain": ("w", "one_plus_w"), "embed_scale": (1.0, 2.0)}  # two-way choices, the simplest first
_FLAGS = ("attn_only", "parallel", "final_norm", "embed_norm", "parallel_shared_norm", "unembed_transform", "gated", "mlp_bias",
          "_sliding", "_bidirectional", "q_bias", "k_bias", "v_bias", "o_bias", "tied", "unembed_bias", *_OPTIONS)
# the choices archs reads off its byte string, a byte each (a size wider than a byte is drawn on its own); the two sizes
# that trade against each other (heads = key/value heads x group) are integer choices of their own, which Hypothesis'
# shrinker lowers and raises in pairs (within one byte string it only lowers bytes one by one)
_CHOICES = ("n_layers", "d_head", "positional", "_rotary_half", "_switches0", "_switches1", "_switches2",
            "norm", "norm_placement", "qk_norm", "d_mlp", "act", "_sliding_mask", "sliding_window", "d_model", "d_vocab", "_n_ctx_half",
            "attn_scale", "attn_softcap", "logit_softcap")
_CHOICE_BYTES = st.binary(min_size=len(_CHOICES), max_size=len(_CHOICES))
_SEED = st.integers(0, 2**32 - 1)


@functools.lru_cache(maxsize=None)
def _ints(low: int, high: int) -> st.SearchStrategy:
    return st.integers(low, high)


@functools.lru_cache(maxsize=None)
def _one_of(values: tuple) -> st.SearchStrategy:
    return st.sampled_from(values)


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
    head, the smallest dimensions, the fewest features on. The key/value heads and
    the group are integer choices; every other field's choice is a
    byte of one drawn byte string, read whether or not the architecture uses it (an
    attention-only model ignores its MLP's), so the choices never depend on each
    other's values and Hypothesis' shrinker lowers each byte alone. A size wider than
    a byte (a bound above 256) is drawn on its own.
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

    def pick(name: str, options: tuple) -> object:
        """``options[k]`` for byte ``b``, ``k = b * len(options) // 256``: byte 0 picks the first (simplest)."""
        return fixed[name] if name in fixed else options[byte[name] * len(options) // 256]

    def size(name: str, low: int, high: int) -> int:
        """An integer in ``[low, high]``, ``low + b * (high - low + 1) // 256`` (byte 0: ``low``); drawn alone if wider than a byte."""
        if name in fixed:
            return fixed[name]
        if high - low + 1 > 256:
            return draw(_ints(low, high))
        return low + byte[name] * (high - low + 1) // 256

    def flag(name: str) -> bool:
        return fixed[name] if name in fixed else bool(switches >> _FLAGS.index(name) & 1)

    def option(name: str) -> object:
        return fixed[name] if name in fixed else _OPTIONS[name][switches >> _FLAGS.index(name) & 1]

    # sizes and heads: the group is clamped so that n_heads <= max_heads
    byte = dict(zip(_CHOICES, draw(_CHOICE_BYTES)))
    n_layers = size("n_layers", 1, max_layers)
    n_kv_heads = fixed["n_kv_heads"] if "n_kv_heads" in fixed else draw(_ints(1, max_heads))
    group = fixed["_group"] if "_group" in fixed else draw(_ints(1, max_heads))
    group = max(1, min(group, max_heads // n_kv_heads))
    n_heads = fixed.get("n_heads", n_kv_heads * group)
    if n_heads % n_kv_heads:
        n_kv_heads = n_heads
    positional = pick("positional", _POSITIONAL)
    d_head = size("d_head", 1, max_d_head)
    if positional == "rotary" and "d_head" not in fixed:
        d_head = 2 * max(1, d_head // 2)  # rotary rotates pairs
    rotary_half = size("_rotary_half", 0, max_d_head // 2)  # rotary_dim / 2; 0 means the whole head
    # the on/off switches and two-way options, eight to a byte, a bit each (off, or the first option = 0): they
    # shrink toward every switch off as they would one by one (Hypothesis draws the eight bits of a byte evenly)
    switches = byte["_switches0"] | byte["_switches1"] << 8 | byte["_switches2"] << 16
    rotary = {}
    if positional == "rotary":
        rotary_dim = fixed.get("rotary_dim", min(2 * rotary_half, d_head) or None)
        rotary = dict(
            rotary_dim=rotary_dim,
            rotary_base=option("rotary_base"),
            rotary_style=option("rotary_style"),
        )
    # norms and blocks: every switch drawn, applied where the family allows it
    norm = pick("norm", _NORM)
    attn_only = flag("attn_only")
    parallel = flag("parallel") and not attn_only
    placement = pick("norm_placement", _PLACEMENT)
    if norm == "none" or parallel:
        placement = "pre"
    drawn_norm = dict(
        norm_eps=option("norm_eps"),
        norm_gain=option("norm_gain"),
        final_norm=flag("final_norm"),
        embed_norm=flag("embed_norm"),
        qk_norm=pick("qk_norm", ("none", "all_heads", "per_head")),
        parallel_shared_norm=flag("parallel_shared_norm"),
        unembed_transform=flag("unembed_transform"),
    )
    norm_fields = {}
    if norm != "none":
        norm_fields = dict(drawn_norm, norm_placement=placement)
        norm_fields["norm_gain"] = drawn_norm["norm_gain"] if norm == "rmsnorm" else "w"
        norm_fields["final_norm"] = False if placement == "post" else drawn_norm["final_norm"]
        norm_fields["parallel_shared_norm"] = parallel and drawn_norm["parallel_shared_norm"]
        norm_fields["unembed_transform"] = (not attn_only) and drawn_norm["unembed_transform"]
    drawn_mlp = dict(
        d_mlp=size("d_mlp", 1, 2 * max_d_model),
        gated=flag("gated"),
        act=pick("act", _ACT),
        mlp_bias=flag("mlp_bias"),
    )
    mlp = {} if attn_only else drawn_mlp
    # sliding window: the layers as a bit mask
    sliding = flag("_sliding")
    mask = size("_sliding_mask", 1, 2 ** min(n_layers, 8) - 1)  # a byte: the first 8 layers (one choice, whatever the depth)
    layers = fixed.get("sliding_layers", tuple(l for l in range(n_layers) if mask >> l & 1))
    window = dict(sliding_window=size("sliding_window", 1, 4), sliding_layers=layers) if sliding else {}
    fields = dict(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_model=size("d_model", 2, max_d_model),
        d_head=d_head,
        d_vocab=size("d_vocab", 2, max_vocab),
        n_ctx=fixed.get("n_ctx", 2 * size("_n_ctx_half", 1, 8)),
        causal=fixed.get("causal", not flag("_bidirectional")),
        q_bias=flag("q_bias"),
        k_bias=flag("k_bias"),
        v_bias=flag("v_bias"),
        o_bias=flag("o_bias"),
        attn_scale=pick("attn_scale", (None, 0.5, 1.0)),
        attn_softcap=pick("attn_softcap", (None, 5.0, 1.0)),
        positional=positional,
        norm=norm,
        attn_only=attn_only,
        parallel=parallel,
        tied=flag("tied"),
        unembed_bias=flag("unembed_bias"),
        logit_softcap=pick("logit_softcap", (None, 10.0, 2.0)),
        embed_scale=option("embed_scale"),
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
    return Weights.random(arch, draw(_SEED), dtype=dtype)


def tokens(arch: Arch, *, max_batch: int = 2, min_pos: int = 1, max_pos: int | None = None) -> st.SearchStrategy[torch.Tensor]:
    """A ``[batch, pos]`` long tensor of ids in ``[0, d_vocab)``, pos <= n_ctx, from a drawn seed.

    Shrinks toward one sequence of ``min_pos`` positions drawn with seed 0. The same
    strategy object for the same arguments (a test draws tokens for each drawn model,
    and a fresh strategy validates itself on its first draw, which costs more than the draw).
    """
    bounds = {k: v for k, v, default in (("max_batch", max_batch, 2), ("min_pos", min_pos, 1), ("max_pos", max_pos, None))
              if type(v) is not type(default) or v != default}  # the defaults left out: the repr is the call
    try:
        return _tokens_cached(arch, tuple((k, type(v), v) for k, v in bounds.items()))  # True is not 1 here
    except TypeError:  # an unhashable argument: a fresh strategy, which says what is wrong on its first draw
        return _tokens(arch, **bounds)


@functools.lru_cache(maxsize=256)
def _tokens_cached(arch: Arch, bounds: tuple) -> st.SearchStrategy[torch.Tensor]:
    return _tokens(arch, **{k: v for k, _, v in bounds})


def _named(name: str):
    """Give a function another ``__name__`` (a composite strategy's repr shows it: ``tokens(...)``)."""
    def rename(f):
        f.__name__ = f.__qualname__ = name
        return f

    return rename


@st.composite
@_named("tokens")
def _tokens(draw: st.DrawFn, arch: Arch, *, max_batch: int = 2, min_pos: int = 1, max_pos: int | None = None) -> torch.Tensor:
    """:func:`tokens`' draw."""
    _check_bound("max_batch", max_batch, 1)
    _check_bound("min_pos", min_pos, 1)
    top = arch.n_ctx if max_pos is None else min(max_pos, arch.n_ctx)
    if min_pos > top:
        raise ValueError(f"tokens: min_pos={min_pos} exceeds max_pos/n_ctx={top}")
    batch = draw(_ints(1, max_batch))
    pos = draw(_ints(min_pos, top))
    seed = draw(_SEED)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, arch.d_vocab, (batch, pos), generator=gen)


def _archs(constraints: dict[str, object]) -> st.SearchStrategy:
    """``archs(**constraints)``, the same strategy object for the same constraints (when they are hashable)."""
    try:
        return _archs_cached(tuple(constraints.items()))
    except TypeError:  # an unhashable constraint (a list): a fresh strategy
        return archs(**constraints)


@functools.lru_cache(maxsize=256)
def _archs_cached(constraints: tuple) -> st.SearchStrategy:
    return archs(**dict(constraints))


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
    if family == "reference":
        arch, target = draw(_archs(constraints)), "reference"
    elif family is None:
        arch = draw(_archs(constraints))
        target = draw(_one_of(("reference", *_families_for(arch))))
    else:
        arch, target = draw(family_archs(family, **constraints)), family
    return Model(arch, draw(_SEED), target, dtype)
