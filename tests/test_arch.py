"""Arch: validation table, repr round trip, describe, derived facts."""

from __future__ import annotations

import pytest
from hypothesis import given

from circuitproof import Arch
from circuitproof.properties.strategies import archs

# (changes, the field the error must name): every row must raise ValueError naming that field.
INVALID = [
    ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
    ({"n_layers": 0}, "n_layers"),
    ({"d_model": -2}, "d_model"),
    ({"d_head": 2.5}, "d_head"),
    ({"n_heads": True}, "n_heads"),
    ({"positional": "alibi"}, "positional"),
    ({"positional": "rotary", "rotary_dim": 3}, "rotary_dim"),
    ({"positional": "rotary", "d_head": 4, "rotary_dim": 6}, "rotary_dim"),
    ({"positional": "rotary", "d_head": 3}, "d_head"),
    ({"positional": "learned", "rotary_dim": 2}, "rotary_dim"),
    ({"positional": "rotary", "rotary_style": "diagonal"}, "rotary_style"),
    ({"positional": "rotary", "rotary_base": 0.5}, "rotary_base"),
    ({"attn_only": True, "gated": True}, "gated"),
    ({"attn_only": True, "parallel": True}, "parallel"),
    ({"attn_only": True, "d_mlp": 32}, "attn_only"),
    ({"norm": "batchnorm"}, "norm"),
    ({"norm": "none", "final_norm": True}, "final_norm"),
    ({"norm": "none", "embed_norm": True}, "embed_norm"),
    ({"norm": "none", "qk_norm": "all_heads"}, "qk_norm"),
    ({"norm": "none", "norm_placement": "post"}, "norm_placement"),
    ({"norm": "layernorm", "norm_gain": "one_plus_w"}, "norm_gain"),
    ({"norm_placement": "post", "final_norm": True}, "final_norm"),
    ({"norm_placement": "middle"}, "norm_placement"),
    ({"parallel": True, "norm_placement": "post"}, "norm_placement"),
    ({"parallel_shared_norm": True}, "parallel_shared_norm"),
    ({"sliding_window": 4}, "sliding_layers"),
    ({"sliding_layers": (0,)}, "sliding_layers"),
    ({"sliding_window": 0, "sliding_layers": (0,)}, "sliding_window"),
    ({"sliding_window": 2, "sliding_layers": (1,)}, "sliding_layers"),
    ({"n_layers": 3, "sliding_window": 2, "sliding_layers": (2, 0)}, "sliding_layers"),
    ({"attn_scale": 0.0}, "attn_scale"),
    ({"attn_softcap": -1.0}, "attn_softcap"),
    ({"logit_softcap": float("inf")}, "logit_softcap"),
    ({"embed_scale": 0.0}, "embed_scale"),
    ({"norm_eps": -1e-5}, "norm_eps"),
    ({"act": "tanh"}, "act"),
    ({"qk_norm": "yes"}, "qk_norm"),
    ({"causal": 1}, "causal"),
    ({"d_mlp": 0}, "d_mlp"),
]


def _call(changes: dict) -> str:
    return "Arch(" + ", ".join(f"{k}={v!r}" for k, v in changes.items()) + ")"


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[_call(c) for c, _ in INVALID])
def test_invalid_arch_raises_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"Arch: {field}=") as info:
        Arch(**changes)
    assert "invalid" in str(info.value)


def test_defaults_resolve():
    a = Arch(n_heads=4)
    assert a.n_kv_heads == 4 and a.group_size == 1
    assert Arch().final_norm is True
    assert Arch(norm="none").final_norm is False
    assert Arch(norm_placement="post").final_norm is False
    assert Arch().scale == pytest.approx(0.5)
    assert Arch(attn_scale=0.125).scale == 0.125


def test_repr_lists_only_changes_and_reconstructs():
    a = Arch(n_layers=2, n_heads=4, n_kv_heads=2, norm="rmsnorm", positional="rotary", rotary_dim=2)
    assert repr(a) == "Arch(n_layers=2, n_heads=4, n_kv_heads=2, positional='rotary', rotary_dim=2, norm='rmsnorm')"
    assert repr(Arch()) == "Arch()"
    assert eval(repr(a)) == a


@given(archs())
def test_drawn_arch_repr_round_trips_and_describes_in_one_line(arch):
    assert eval(repr(arch), {"Arch": Arch}) == arch
    line = arch.describe()
    assert "\n" not in line and line.startswith(f"{arch.n_layers}L x {arch.n_heads}H")
    assert hash(arch) == hash(eval(repr(arch), {"Arch": Arch}))


def test_arch_is_frozen():
    with pytest.raises(AttributeError):
        Arch().n_layers = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arch", "slots"),
    [
        (Arch(), ("attn_in", "mlp_in")),
        (Arch(norm_placement="post"), ("attn_out", "mlp_out")),
        (Arch(norm="rmsnorm", norm_placement="output"), ("attn_out", "mlp_out")),
        (Arch(norm="rmsnorm", norm_placement="sandwich"), ("attn_in", "attn_out", "mlp_in", "mlp_out")),
        (Arch(parallel=True, parallel_shared_norm=True), ("attn_in",)),
        (Arch(parallel=True), ("attn_in", "mlp_in")),
        (Arch(attn_only=True), ("attn_in",)),
        (Arch(norm="none"), ()),
    ],
    ids=repr,
)
def test_norm_slots(arch, slots):
    assert arch.norm_slots() == slots


def test_describe_mentions_every_switched_feature():
    a = Arch(
        n_heads=4, n_kv_heads=1, causal=False, q_bias=True, o_bias=True, attn_softcap=50.0, n_layers=2,
        sliding_window=4, sliding_layers=(0,), qk_norm="all_heads", positional="rotary", rotary_dim=2,
        rotary_style="interleaved", norm="rmsnorm", norm_gain="one_plus_w", norm_placement="sandwich",
        embed_norm=True, gated=True, act="silu", tied=True, unembed_bias=True, logit_softcap=30.0, embed_scale=2.0,
    )
    line = a.describe()
    for word in ("(1 kv)", "bidirectional", "bias qo", "softcap 50", "window 4", "qk-norm", "rotary 2/4 interleaved",
                 "rmsnorm 1+w sandwich", "+final+embed", "gated silu", "tied", "b_U", "softcap 30", "embed x2"):
        assert word in line, word


def test_full_rotary_has_one_spelling():
    assert Arch(positional="rotary", d_head=4, rotary_dim=4) == Arch(positional="rotary", d_head=4)
    assert Arch(positional="rotary", d_head=4, rotary_dim=4).rotary_dims == 4
