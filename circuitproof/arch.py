"""The architecture model: every feature of the family that a claim can depend on.

An :class:`Arch` is a frozen, hashable description of one transformer of the
family in DESIGN.md. Every layer of circuitproof reasons about it: the symbolic
layer asks which identities hold (``Identity.assumptions`` are predicates on an
``Arch``), the numeric layer reads its sizes and switches, and the property
tests draw them.

Its ``repr`` is a valid constructor call listing only the fields that differ
from their defaults, so a shrunk counterexample can be pasted back::

    >>> Arch(n_layers=2, norm="rmsnorm")
    Arch(n_layers=2, norm='rmsnorm')

The semantics of each field, in the row convention of DESIGN.md (the stream
``x`` is ``[batch, pos, d_model]``):

Sizes
    ``n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, d_vocab, n_ctx``.
    ``n_kv_heads`` defaults to ``n_heads``; query head ``h`` reads key/value head
    ``h // (n_heads // n_kv_heads)`` (transformers' ``repeat_kv``).
Attention
    ``causal``: key ``j`` is visible from query ``i`` iff ``j <= i``.
    ``sliding_window`` with ``sliding_layers``: on those layers, also
    ``i - j < sliding_window`` (and ``|i - j| < sliding_window`` if bidirectional).
    ``attn_scale``: scores are ``q k^T * attn_scale`` (default ``d_head ** -0.5``).
    ``attn_softcap``: scores become ``c * tanh(scores / c)`` before the mask.
    ``q_bias, k_bias, v_bias, o_bias``: the four biases, separately.
    ``qk_norm``: a norm (of kind ``norm``) on queries and keys before rotary,
    over all heads' concatenated projections (``"all_heads"``, OLMo 2) or on each
    head's ``d_head`` vector (``"per_head"``).
Positions
    ``positional``: ``"none"``, ``"learned"`` (``W_pos`` added to the embedding)
    or ``"rotary"``: the first ``rotary_dim`` coordinates of each query and key
    head are rotated by angle ``p * base ** (-2k / rotary_dim)``, pairing
    coordinate ``k`` with ``k + rotary_dim / 2`` (``"half"``: Llama, GPT-NeoX) or
    ``2k`` with ``2k + 1`` (``"interleaved"``: GPT-J).
Norms
    ``norm``: ``"none"``, ``"layernorm"`` (``(x - mean) / sqrt(var + eps) * g + b``)
    or ``"rmsnorm"`` (``x / sqrt(mean(x^2) + eps) * g``), ``g = w`` or ``1 + w``
    (``norm_gain``). ``norm_placement``:
    ``"pre"`` (GPT-2, Llama): ``x = x + attn(n(x))``;
    ``"post"`` (BERT): ``x = n(x + attn(x))``;
    ``"output"`` (OLMo 2): ``x = x + n(attn(x))``;
    ``"sandwich"`` (Gemma 2): ``x = x + n'(attn(n(x)))``; likewise for the MLP.
    ``final_norm`` before the unembedding; ``embed_norm`` after the embedding.
Blocks
    ``parallel``: ``x = x + attn(n1(x)) + mlp(n2(x))``, with ``n1 = n2`` if
    ``parallel_shared_norm`` (GPT-J) or two norms (GPT-NeoX); pre-norm only.
    ``attn_only``: no MLP.
MLP
    ``gated``: ``(act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out``;
    otherwise ``act(x W_in + b_in) W_out + b_out``; ``mlp_bias`` switches the
    biases; ``act`` in ``gelu`` (exact), ``gelu_tanh``, ``relu``, ``silu``.
Unembedding
    ``tied``: ``W_U = W_E^T``. ``unembed_bias``: ``b_U``. ``logit_softcap``:
    ``c * tanh(logits / c)``. ``embed_scale``: the embedding multiplier ``m``
    (Gemma's ``sqrt(d_model)``). ``unembed_transform`` (BERT's masked-LM head):
    ``x -> n(act(x W_T + b_T))`` before ``W_U``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

__all__ = ["Arch", "NORMS", "NORM_PLACEMENTS", "POSITIONALS", "ROTARY_STYLES", "ACTIVATIONS", "QK_NORMS"]

NORMS = ("none", "layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post", "output", "sandwich")
NORM_GAINS = ("w", "one_plus_w")
POSITIONALS = ("none", "learned", "rotary")
ROTARY_STYLES = ("half", "interleaved")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
QK_NORMS = ("none", "all_heads", "per_head")


def _invalid(name: str, value: object, why: str) -> ValueError:
    return ValueError(f"Arch: {name}={value!r} is invalid: {why}")


@dataclass(frozen=True)
class Arch:
    """A transformer of the family, described by its features (see the module docstring).

    Construction validates every field and every combination; an invalid one
    raises ``ValueError`` naming the field, its value and what to change.
    """

    # sizes
    n_layers: int = 1
    n_heads: int = 1
    d_model: int = 8
    d_head: int = 4
    d_mlp: int = 16
    d_vocab: int = 16
    n_ctx: int = 16
    n_kv_heads: int | None = None
    # attention
    causal: bool = True
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    attn_scale: float | None = None
    attn_softcap: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    qk_norm: str = "none"
    # positions
    positional: str = "learned"
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_style: str = "half"
    # norms
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_gain: str = "w"
    norm_placement: str = "pre"
    final_norm: bool | None = None
    embed_norm: bool = False
    # blocks
    parallel: bool = False
    parallel_shared_norm: bool = False
    attn_only: bool = False
    # mlp
    gated: bool = False
    act: str = "gelu"
    mlp_bias: bool = True
    # embedding and unembedding
    tied: bool = False
    unembed_bias: bool = False
    logit_softcap: float | None = None
    embed_scale: float = 1.0
    unembed_transform: bool = False

    def __post_init__(self) -> None:
        for name, value in self._auto_defaults().items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.positional == "rotary" and self.rotary_dim is not None and self.rotary_dim == self.d_head:
            object.__setattr__(self, "rotary_dim", None)  # full rotary has one spelling: None
        if isinstance(self.sliding_layers, list):
            object.__setattr__(self, "sliding_layers", tuple(self.sliding_layers))
        self._validate()

    def _auto_defaults(self) -> dict[str, object]:
        """Fields whose default (None) depends on others: n_kv_heads = n_heads;
        final_norm = a norm exists and blocks are not post-norm."""
        return {
            "n_kv_heads": self.n_heads,
            "final_norm": self.norm != "none" and self.norm_placement != "post",
        }

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        for name in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_vocab", "n_ctx"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _invalid(name, value, "must be an integer >= 1")
        if not isinstance(self.d_mlp, int) or isinstance(self.d_mlp, bool) or self.d_mlp < 1:
            raise _invalid("d_mlp", self.d_mlp, "must be an integer >= 1 (use attn_only=True for no MLP)")
        if self.n_heads % self.n_kv_heads:
            raise _invalid(
                "n_kv_heads", self.n_kv_heads, f"must divide n_heads={self.n_heads} (each key/value head serves n_heads // n_kv_heads query heads)"
            )
        for f in fields(self):
            if f.type == "bool" or f.name == "final_norm":
                if not isinstance(getattr(self, f.name), bool):
                    raise _invalid(f.name, getattr(self, f.name), "must be True or False")
        for name, allowed in (
            ("qk_norm", QK_NORMS),
            ("positional", POSITIONALS),
            ("rotary_style", ROTARY_STYLES),
            ("norm", NORMS),
            ("norm_gain", NORM_GAINS),
            ("norm_placement", NORM_PLACEMENTS),
            ("act", ACTIVATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise _invalid(name, getattr(self, name), f"must be one of {allowed}")
        for name in ("attn_scale", "attn_softcap", "logit_softcap"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise _invalid(name, value, "must be None or a finite number > 0")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps >= 0 and math.isfinite(self.norm_eps)):
            raise _invalid("norm_eps", self.norm_eps, "must be a finite number >= 0")
        if not (isinstance(self.embed_scale, (int, float)) and math.isfinite(self.embed_scale) and self.embed_scale != 0):
            raise _invalid("embed_scale", self.embed_scale, "must be a finite nonzero number")
        self._validate_positions()
        self._validate_window()
        self._validate_norms()
        self._validate_blocks()

    def _validate_positions(self) -> None:
        if self.positional != "rotary":
            for name, default in (("rotary_dim", None), ("rotary_base", 10000.0), ("rotary_style", "half")):
                if getattr(self, name) != default:
                    raise _invalid(name, getattr(self, name), f"is a rotary setting but positional={self.positional!r}")
            return
        dim = self.rotary_dim
        if dim is not None:
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
                raise _invalid("rotary_dim", dim, "must be an even integer >= 2 (or None for d_head)")
            if dim % 2:
                raise _invalid("rotary_dim", dim, "must be even: rotary rotates coordinates in pairs")
            if dim > self.d_head:
                raise _invalid("rotary_dim", dim, f"must be <= d_head={self.d_head}: rotary acts inside one head")
        elif self.d_head % 2:
            raise _invalid("d_head", self.d_head, "must be even for full rotary (or set an even rotary_dim)")
        if not (math.isfinite(self.rotary_base) and self.rotary_base > 1):
            raise _invalid("rotary_base", self.rotary_base, "must be a finite number > 1")

    def _validate_window(self) -> None:
        if self.sliding_window is None:
            if self.sliding_layers:
                raise _invalid("sliding_layers", self.sliding_layers, "needs sliding_window to be set")
            return
        if not isinstance(self.sliding_window, int) or isinstance(self.sliding_window, bool) or self.sliding_window < 1:
            raise _invalid("sliding_window", self.sliding_window, "must be an integer >= 1")
        if not self.sliding_layers:
            raise _invalid("sliding_layers", self.sliding_layers, "must name at least one layer when sliding_window is set")
        if tuple(sorted(set(self.sliding_layers))) != self.sliding_layers:
            raise _invalid("sliding_layers", self.sliding_layers, "must be strictly increasing layer indices")
        for layer in self.sliding_layers:
            if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
                raise _invalid("sliding_layers", self.sliding_layers, f"layer {layer!r} is not in range(n_layers={self.n_layers})")

    def _validate_norms(self) -> None:
        if self.norm == "none":
            for name, default in (
                ("final_norm", False),
                ("embed_norm", False),
                ("qk_norm", "none"),
                ("unembed_transform", False),
                ("norm_placement", "pre"),
                ("norm_gain", "w"),
                ("parallel_shared_norm", False),
            ):
                if getattr(self, name) != default:
                    raise _invalid(name, getattr(self, name), "needs a norm, but norm='none'")
        if self.norm_gain == "one_plus_w" and self.norm != "rmsnorm":
            raise _invalid("norm_gain", self.norm_gain, "1 + w gains are an RMSNorm convention (Gemma); use norm='rmsnorm'")
        if self.norm_placement == "post" and self.final_norm:
            raise _invalid("final_norm", True, "post-norm blocks already end on a norm; set final_norm=False")

    def _validate_blocks(self) -> None:
        if self.attn_only:
            if self.gated:
                raise _invalid("gated", True, "a gated MLP needs an MLP, but attn_only=True")
            if self.parallel:
                raise _invalid("parallel", True, "parallel attention and MLP needs an MLP, but attn_only=True")
            if self.d_mlp != 16 or self.act != "gelu" or not self.mlp_bias:
                raise _invalid("attn_only", True, "leave d_mlp, act and mlp_bias at their defaults: there is no MLP")
        if self.parallel_shared_norm and not self.parallel:
            raise _invalid("parallel_shared_norm", True, "only parallel blocks share a norm; set parallel=True")
        if self.parallel and self.norm != "none" and self.norm_placement != "pre":
            raise _invalid("norm_placement", self.norm_placement, "parallel blocks are pre-norm (GPT-J, GPT-NeoX)")

    # ----------------------------------------------------------- derived facts
    @property
    def scale(self) -> float:
        """The attention score multiplier: ``attn_scale`` or ``d_head ** -0.5``."""
        return self.attn_scale if self.attn_scale is not None else self.d_head**-0.5

    @property
    def group_size(self) -> int:
        """Query heads per key/value head: ``n_heads // n_kv_heads``."""
        return self.n_heads // self.n_kv_heads

    @property
    def rotary_dims(self) -> int:
        """Coordinates of each head that rotary rotates (0 without rotary)."""
        if self.positional != "rotary":
            return 0
        return self.rotary_dim if self.rotary_dim is not None else self.d_head

    @property
    def has_mlp(self) -> bool:
        return not self.attn_only

    @property
    def has_norm(self) -> bool:
        return self.norm != "none"

    def norm_slots(self) -> tuple[str, ...]:
        """The per-layer norm slots this architecture has, in forward order.

        ``attn_in``/``mlp_in`` normalise a sublayer's input, ``attn_out``/``mlp_out``
        its output (``"output"``, ``"sandwich"``) or the sum after the add (``"post"``).
        A parallel block with a shared norm has ``attn_in`` only.
        """
        if self.norm == "none":
            return ()
        placement = self.norm_placement
        slots = {
            "pre": ("attn_in", "mlp_in"),
            "post": ("attn_out", "mlp_out"),
            "output": ("attn_out", "mlp_out"),
            "sandwich": ("attn_in", "attn_out", "mlp_in", "mlp_out"),
        }[placement]
        if self.attn_only:
            slots = tuple(s for s in slots if s.startswith("attn"))
        if self.parallel_shared_norm:
            slots = ("attn_in",)
        return slots

    def is_sliding(self, layer: int) -> bool:
        """Whether ``layer`` uses the sliding window."""
        return layer in self.sliding_layers

    def replace(self, **changes: object) -> Arch:
        """A copy with ``changes`` applied (validated like any construction).

        Fields left at their derived default (``n_kv_heads``, ``final_norm``) are
        derived again for the copy: ``Arch().replace(norm="none")`` has no final norm.
        """
        auto = {name: None for name, value in self._auto_defaults().items() if getattr(self, name) == value}
        return dataclasses.replace(self, **{**auto, **changes})

    # ---------------------------------------------------------------- display
    def _non_default(self) -> dict[str, object]:
        out = {}
        auto = self._auto_defaults()
        for f in fields(self):
            value = getattr(self, f.name)
            if value == auto.get(f.name, f.default):
                continue
            if value != f.default:
                out[f.name] = value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._non_default().items())
        return f"Arch({args})"

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        """Hypothesis and IPython print the pasteable ``repr``, not every field."""
        printer.text(repr(self))

    def describe(self) -> str:
        """One readable line: sizes, attention, positions, norms, blocks, MLP, unembedding."""
        kv = f" ({self.n_kv_heads} kv)" if self.n_kv_heads != self.n_heads else ""
        parts = [
            f"{self.n_layers}L x {self.n_heads}H{kv}, d_model={self.d_model} d_head={self.d_head}"
            + ("" if self.attn_only else f" d_mlp={self.d_mlp}")
            + f" vocab={self.d_vocab} ctx={self.n_ctx}",
        ]
        attn = ["causal" if self.causal else "bidirectional"]
        biases = "".join(c for c, on in zip("qkvo", (self.q_bias, self.k_bias, self.v_bias, self.o_bias)) if on)
        if biases:
            attn.append(f"bias {biases}")
        if self.attn_scale is not None:
            attn.append(f"scale {self.attn_scale:g}")
        if self.attn_softcap is not None:
            attn.append(f"softcap {self.attn_softcap:g}")
        if self.sliding_window is not None:
            attn.append(f"window {self.sliding_window} on layers {list(self.sliding_layers)}")
        if self.qk_norm != "none":
            attn.append(f"qk-norm {self.qk_norm}")
        parts.append("attn " + " ".join(attn))
        if self.positional == "rotary":
            parts.append(f"rotary {self.rotary_dims}/{self.d_head} {self.rotary_style} base {self.rotary_base:g}")
        else:
            parts.append(f"positions {self.positional}")
        if self.norm == "none":
            parts.append("no norm")
        else:
            gain = " 1+w" if self.norm_gain == "one_plus_w" else ""
            extras = [x for x, on in (("final", self.final_norm), ("embed", self.embed_norm)) if on]
            parts.append(f"{self.norm}{gain} {self.norm_placement}" + (f" +{'+'.join(extras)}" if extras else ""))
        if self.attn_only:
            parts.append("attention-only")
        else:
            block = "parallel" + (" shared-norm" if self.parallel_shared_norm else "") if self.parallel else "sequential"
            mlp = ("gated " if self.gated else "") + self.act + ("" if self.mlp_bias else " no-bias")
            parts.append(f"{block}, mlp {mlp}")
        unembed = ["tied" if self.tied else "untied"]
        if self.unembed_bias:
            unembed.append("b_U")
        if self.logit_softcap is not None:
            unembed.append(f"softcap {self.logit_softcap:g}")
        if self.embed_scale != 1.0:
            unembed.append(f"embed x{self.embed_scale:g}")
        if self.unembed_transform:
            unembed.append("transform head")
        parts.append("unembed " + " ".join(unembed))
        return "; ".join(parts)
