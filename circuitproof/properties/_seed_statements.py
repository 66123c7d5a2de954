"""The seed's statements, one :class:`Statement` each: the quote, its section, the claims it maps to and the verdict.

The seed is ``../shared/seed/transformer-circuits-framework.txt`` (sections as headed there).
Quotes are verbatim up to notation: the seed's lost subscripts are written ``x_l``,
``W_Q^T W_K`` as printed (column convention). What backs each verdict is named, never
restated: ``claims`` (ids of ``CLAIMS`` / ``SEED_CLAIMS``), ``cases`` (counterexample cases,
:data:`~circuitproof.properties.counterexamples.CASES`, found when the register is built),
``proofs`` (ids of the symbolic layer's identities) and ``findings`` (runs of hand-built
circuits and of the analogies, :mod:`._seed_findings`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONDITIONAL", "EXACT", "FALSE", "INFORMAL", "STATEMENTS", "VERDICTS", "Statement"]

EXACT, CONDITIONAL, FALSE, INFORMAL = "exact", "exact under conditions", "false", "not a formal statement"
VERDICTS = (EXACT, CONDITIONAL, FALSE, INFORMAL)


@dataclass(frozen=True)
class Statement:
    """One formal statement of the seed and its verdict, with what backs the verdict."""

    section: str
    quote: str
    verdict: str
    reason: str
    claims: tuple[str, ...] = ()
    cases: tuple[str, ...] = ()
    proofs: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"Statement: verdict={self.verdict!r} must be one of {VERDICTS}")


_GLANCE, _CORE = "Framework At a Glance", "The Core Claim"
_ADD = "The Residual Stream as Shared State / Additive updates, not overwriting"
_WHY = "The Residual Stream as Shared State / Why this structure matters"
_QK, _OV = "Attention Heads / The QK circuit: where to look", "Attention Heads / The OV circuit: what to do"
_TRANSPORT = "Attention Heads / Attention as information transport"
_COMPOSE = "Computation as Circuit Composition / Layers compose, they do not replace"
_METHOD = "What Mechanistic Interpretation Means / The circuit identification methodology"
_DEEP = "The Deep Structure: State Evolution and Algorithm Execution / Core Insight"
_RECUR = "The Deep Structure / Analogy: recurrence relations and Pell-type systems"
_VIRTUAL = "The Deep Structure / Logits as sum of per-head contributions - the virtual weights formulation"
_ALGO = "The Deep Structure / From pattern learning to algorithm execution"
_COPY = "A Minimal Example: The Copy Mechanism"
_QUANT = "Why This Matters for Quantitative Systems"
_CLOSE = "Closing: Computation, Not Correlation"

_POST = ("residual.additive",)
_ABLATE = ("ablation.direct_effect/mlp", "ablation.direct_effect/final-norm")
_LINEAR = ("attention.linear_given_pattern", "seed.head_linear/value-bias", "seed.head_linear/layernorm-bias")

STATEMENTS: tuple[Statement, ...] = (
    # ---------------------------------------------------------------- at a glance
    Statement(_GLANCE, "Update rule: Additive only", CONDITIONAL,
              "The residual adds are exact without a post-norm; a post-norm (BERT) replaces x + a + m by N(x + a + m).",
              ("residual.additive", "seed.update_rule"), _POST),
    Statement(_GLANCE, "Information flow: Linear superposition", CONDITIONAL,
              "x_L = x_0 + sum of every sublayer's write, and the logits a sum of terms through W_U, hold without a post-norm, with "
              "the final norm's scale frozen and without a logit softcap.",
              ("residual.expansion", "logits.decomposition"), ("residual.expansion/post-norm", "logits.decomposition/softcap")),
    Statement(_GLANCE, "Attention decomposition: QK + OV circuits", CONDITIONAL,
              "The OV circuit always gives a head's write; the pattern is a function of W_QK only without rotary or QK-norm (rotary "
              "makes the bilinear form depend on the offset i - j, and W_Q, W_K matter separately).",
              ("attention.qk_circuit", "attention.ov_circuit", "attention.gauge"), ("attention.qk_circuit", "attention.gauge/rotary")),
    # ---------------------------------------------------------------- the core claim
    Statement(_CORE, "[the framework] demonstrates that complex model behaviours arise from the composition of simple linear "
                     "operations.", CONDITIONAL,
              "With the patterns frozen, an attention-only norm-free model is a sum of products of linear maps (the path expansion); "
              "an MLP, a live norm or a bias breaks it.",
              ("paths.attention_only", "attention.linear_given_pattern"), ("paths.attention_only/mlp", "attention.linear_given_pattern")),
    Statement(_CORE, "Layers do not compute in sequence; they accumulate into a shared state.", CONDITIONAL,
              "The accumulation x_L = x_0 + sum_l (a_l + m_l) is exact without a post-norm. Each layer still reads the state the "
              "previous one left (x_{l+1} is a function of x_l), so the layers do run in sequence.",
              ("residual.expansion",), ("residual.expansion/post-norm",)),
    # ---------------------------------------------------------------- additive updates
    Statement(_ADD, "Every transformer layer receives a vector - the residual stream - and writes an additive update back to it.",
              CONDITIONAL, "Exact without a post-norm.", ("residual.additive",), _POST),
    Statement(_ADD, "No component owns the stream. No component erases prior information. The residual stream is a shared register: "
                    "every attention head and MLP layer reads from it and adds to it.", FALSE,
              "Read as 'the stream after a component still determines the stream before it' (seed.no_erasure: no direction of x_0 "
              "is lost to first order). A post-norm erases (a LayerNorm each position's mean, exactly); and even without any norm, "
              "a component can write -x: the hand-built eraser head leaves x_1 = 0. Adding is not keeping.",
              ("seed.no_erasure", "residual.additive"), ("seed.no_erasure/post-norm",), (), ("eraser",)),
    Statement(_ADD, "x_{l+1} = x_l + Attn(x_l) + MLP(x_l + Attn(x_l))", CONDITIONAL,
              "Exact for sequential blocks without a post-norm (Attn and MLP include their own input and output norms). A parallel "
              "block (GPT-J, GPT-NeoX) feeds the MLP x_l, not x_l + Attn(x_l): remainder MLP(x) - MLP(x + Attn(x)).",
              ("seed.update_rule", "residual.additive"), ("seed.update_rule/parallel", "seed.update_rule/post-norm"),
              ("seed.update_rule",)),
    Statement(_ADD, "information from different sub-computations coexists in the stream as a sum of vectors. The residual stream at "
                    "any position is a superposition of all prior contributions - token embedding, positional information, every prior "
                    "layer's update", CONDITIONAL,
              "x_L = x_0 + sum_l (a_l + m_l), x_0 = m (W_E[t] + W_pos[p]) (then the embedding norm, if any), exact without a post-norm. "
              "With rotary, the position enters no stream: it acts inside attention only.",
              ("residual.expansion", "embedding.x0"), ("residual.expansion/post-norm",)),
    Statement(_ADD, "The residual stream does not compress or gate or route. It simply accumulates.", FALSE,
              "It accumulates (residual.expansion, no post-norm), but what accumulates can cancel what was there: as for 'no "
              "component erases prior information', a post-norm and the eraser head refute it.",
              ("seed.no_erasure", "residual.expansion"), ("seed.no_erasure/post-norm",), (), ("eraser",)),
    Statement(_ADD, "Tokens [t_i] -> Embedding [e_i] -> Attn Delta [+a_i] (additive update, not replacement) -> MLP Delta [+m_i] (again "
                    "additive) -> Stream_1: [e_i + a_i + m_i] (superposition of all contributions)", CONDITIONAL,
              "The one-layer expansion x_1 = x_0 + a_0 + m_0, exact without a post-norm; e_i is x_0 including the embedding multiplier, "
              "the position and the embedding norm. a_i depends on every visible position, not on e_i alone.",
              ("embedding.x0", "residual.additive", "residual.expansion"), ("residual.expansion/post-norm",)),
    # ---------------------------------------------------------------- why this structure matters
    Statement(_WHY, "If attention head h at layer l writes vector v to the stream, and some later component reads the stream and "
                    "produces output f(... + v + ...), we can ask: what does the model compute counterfactually if we ablate v? The "
                    "linear structure makes such interventions clean.", CONDITIONAL,
              "Zero-ablating a head moves the logits by exactly -v W_U only if nothing but W_U reads v (attention-only or parallel "
              "last layer), with no final norm (or its scale frozen) and no softcap; a later MLP or a live final norm reads v "
              "non-linearly. Patching a head's write from h to h' moves them by (h' - h) W_U under the same conditions.",
              ("ablation.direct_effect", "patching.direct_effect"),
              _ABLATE + ("patching.direct_effect/final-norm", "patching.direct_effect/mlp")),
    Statement(_WHY, "With residual connections, the information from each sub-circuit is preserved as a separable additive term in the "
                    "stream", CONDITIONAL, "Exact without a post-norm.", ("residual.expansion",), ("residual.expansion/post-norm",)),
    # ---------------------------------------------------------------- QK
    Statement(_QK, "given query vector q at position i and key vector k at position j, the attention weight alpha_ij is determined by "
                   "their inner product ... alpha_ij = softmax_j( x_i^T W_Q^T W_K x_j / sqrt(d) )", CONDITIONAL,
              "Holds with x what the head reads (the normalised stream under pre-norm), no query bias (b_Q W_K^T x_j varies with j; "
              "b_K cancels), no rotary or QK-norm, no score softcap, and sqrt(d) = sqrt(d_head) with the default scale. Reading d as "
              "d_model holds only when the scale is 1/sqrt(d_model).",
              ("attention.qk_circuit", "seed.qk", "seed.qk.d_model"),
              ("seed.qk/query-bias", "seed.qk/scale", "seed.qk/softcap", "seed.qk.d_model/default-scale", "attention.qk_circuit"),
              ("seed.qk", "seed.qk_d_model")),
    Statement(_QK, "The product W_Q^T W_K - a single matrix - fully characterises the attention pattern. You do not need to reason "
                   "about W_Q and W_K independently.", CONDITIONAL,
              "Without rotary and QK-norm any W_Q M, W_K M^-T with the same product give the same pattern; under rotary they do not. "
              "A query bias adds b_Q W_K^T, which W_QK does not contain.",
              ("attention.gauge", "attention.qk_circuit", "seed.qk"),
              ("attention.gauge/rotary", "attention.qk_circuit", "seed.qk/query-bias")),
    Statement(_QK, "Their product maps pairs of residual stream vectors to a scalar score, and the QK circuit is precisely this bilinear "
                   "form.", CONDITIONAL,
              "A bilinear form of the normalised stream plus bias terms (affine in each argument); under rotary one form per offset "
              "i - j, and the key bias no longer cancels.",
              ("attention.qk_circuit", "attention.key_bias_invariance"), ("attention.qk_circuit", "attention.key_bias_invariance/rotary")),
    Statement(_QK, "Crucially, this tells you nothing about what computation occurs at attended positions - only which positions get "
                   "attended to.", EXACT,
              "The pattern does not depend on W_V or W_O: the OV gauge W_V N, N^-1 W_O (any invertible N) leaves every pattern and "
              "logit unchanged, for every architecture.", ("attention.gauge", "attention.ov_circuit")),
    # ---------------------------------------------------------------- OV
    Statement(_OV, "Once attention weights are fixed, the head computes a weighted sum of value vectors, then projects back to the "
                   "residual stream.", EXACT, "h_i = sum_j A_ij v_j W_O, always (v includes b_V).", ("attention.ov_circuit",)),
    Statement(_OV, "The OV circuit - W_V W_O, again a single matrix - characterises what the head actually computes. It maps a source "
                   "position's residual stream vector to the update written at the destination position.", CONDITIONAL,
              "h_i = sum_j A_ij x_j W_OV + b_V W_O: W_OV with the value bias, and x is what the head reads (N(x) under pre-norm), "
              "not the stream. Given those, any W_V N, N^-1 W_O with the same product compute the same.",
              ("attention.ov_circuit", "attention.gauge", "seed.ov"), ("seed.ov/value-bias", "seed.ov/pre-norm")),
    Statement(_OV, "Delta x_i = sum_j alpha_ij W_O W_V x_j", CONDITIONAL,
              "The column convention's W_O W_V x_j is the row convention's x_j W_V W_O (checked). Exact without a value bias and for "
              "a head that reads the stream itself (no pre-norm or sandwich input norm).",
              ("seed.ov", "attention.ov_circuit"), ("seed.ov/value-bias", "seed.ov/pre-norm"), ("seed.ov", "seed.translation.ov")),
    Statement(_OV, "QK and OV circuits can be analyzed independently. ... These are two orthogonal properties of the same head, "
                   "discoverable by examining the respective matrix products.", CONDITIONAL,
              "The QK and OV gauges act independently and the pattern never reads W_OV; but the QK side is one matrix only without "
              "rotary or QK-norm.", ("attention.gauge", "attention.qk_circuit", "attention.ov_circuit"), ("attention.gauge/rotary",)),
    # ---------------------------------------------------------------- information transport
    Statement(_TRANSPORT, "It selects a source position (via QK routing), reads a function of that position's stream vector (via the "
                          "OV linear map), and writes the result as an additive update to the destination position's stream.",
              CONDITIONAL,
              "The head reads a weighted mixture of every visible position, sum_j A_ij x_j W_OV (+ b_V W_O); it selects one source "
              "only where the pattern row is one-hot. The hand-built induction head, given two earlier occurrences, splits 0.5/0.5.",
              ("attention.ov_circuit",), (), (), ("last_occurrence",)),
    Statement(_TRANSPORT, "The entire operation is linear in the stream vectors - the nonlinearity is only in the softmax that produces "
                          "attention weights.", CONDITIONAL,
              "Given the pattern, a head is affine in what it reads: linear only without a value bias (and a LayerNorm input bias); "
              "and under pre-norm the input norm is a second nonlinearity: with its scale live the head is not affine in the stream.",
              ("attention.linear_given_pattern", "seed.head_linear"), _LINEAR),
    Statement(_TRANSPORT, "This means that for a fixed attention pattern, the head's contribution is a linear function of the residual "
                          "stream.", CONDITIONAL, "As above: the norm's scale frozen too, and linear (not affine) only without biases.",
              ("seed.head_linear", "attention.linear_given_pattern"), _LINEAR, ("seed.head_linear[none]",)),
    Statement(_TRANSPORT, "And because the stream is a linear superposition of prior contributions, the head's output is a linear "
                          "function of all prior sub-circuit outputs.", CONDITIONAL,
              "Composes the two: x_l = x_0 + sum of prior writes (no post-norm) and the head linear given its pattern (frozen "
              "scale, no biases).", ("attention.linear_given_pattern", "residual.expansion", "seed.head_linear"),
              ("residual.expansion/post-norm", "attention.linear_given_pattern", "seed.head_linear/value-bias")),
    Statement(_TRANSPORT, "Complex multi-head attention is, at its core, a sum of linear transport operations.", CONDITIONAL,
              "attn_l = sum_h h_{l,h} + b_O: the output bias belongs to no head, and each head is linear only given its pattern, "
              "without biases.", ("attention.head_sum", "seed.layer_split", "seed.head_linear"),
              ("seed.layer_split/output-bias", "seed.head_linear/value-bias")),
    # ---------------------------------------------------------------- composition
    Statement(_COMPOSE, "Layer l+1 reads the accumulated state and adds a further update. The model's computation is not a pipeline - "
                        "it is an accumulation.", CONDITIONAL, "Exact without a post-norm.", ("residual.additive", "residual.expansion"),
              _POST),
    Statement(_COMPOSE, "A head at layer 2 can read a feature that was written to the stream by a head at layer 1.", EXACT,
              "Shown by the hand-built induction circuit: layer 1's W_K reads the subspace layer 0's W_O writes (K-composition); "
              "ablating layer 0 breaks layer 1. (The path expansion, paths.attention_only, names every such composition term.)",
              (), (), (), ("induction_ablation",)),
    Statement(_COMPOSE, "# Layer 1: Previous-Token Head (PTH) # QK circuit: attends from position i to position i-1 # OV circuit: "
                        "copies token identity of source to destination stream", EXACT,
              "Realised exactly by circuits.previous_token (position 0, having no predecessor, attends to itself).",
              (), (), (), ("previous_token",)),
    Statement(_COMPOSE, "# Layer 2: Induction Head (IH) # QK circuit: current query \"what came before me previously?\" # -> compares "
                        "current token embedding with the PTH-written previous-token information at all other positions # -> attends "
                        "to positions where [t_{k}] = [t_{i-1}] # OV circuit: copies the token that followed that prior occurrence "
                        "# Result: IH(position i) = copy of token that followed the last occurrence of the current token's predecessor",
              FALSE,
              "The comparison line is right (t_i against the PTH's t_{k-1}), the conclusion is off by one: the induction head attends "
              "to k with t_{k-1} = t_i and copies t_k = t_{i+1}. Read literally with i the query, 'positions where t_k = t_{i-1}' "
              "and 'the token that followed the last occurrence of the current token's predecessor' give t_i, the current token "
              "again. Read with i the position predicted, the attended position is still one early, and the Result line again "
              "gives the current token (only the OV line then names the right token).",
              (), (), (), ("induction",)),
    Statement(_COMPOSE, "The induction head ... is a two-layer circuit: one head writes a \"previous token\" signal to the stream, and a "
                        "second head reads that signal to implement a pattern-matching operation. Neither head alone implements the "
                        "full algorithm.", EXACT, "On the hand-built circuit, ablating either head takes next-token accuracy on the "
                        "repeated half from 1 to 0.", (), (), (), ("induction_ablation",)),
    # ---------------------------------------------------------------- method
    Statement(_METHOD, "Because the QK and OV matrices have direct interpretations as bilinear routing forms and linear value maps, we "
                       "can read off what a head computes by examining these matrices", CONDITIONAL,
              "The QK side is a bilinear form of the stream only without rotary or QK-norm; the OV side is a linear map of what the "
              "head reads, plus b_V W_O.", ("attention.qk_circuit", "attention.ov_circuit", "seed.ov"),
              ("attention.qk_circuit", "seed.ov/value-bias")),
    # ---------------------------------------------------------------- the deep structure
    Statement(_DEEP, "The key structural property is that updates are additive and the state is a linear superposition of "
                     "contributions from all prior operations.", CONDITIONAL, "Exact without a post-norm.",
              ("residual.additive", "residual.expansion"), ("residual.expansion/post-norm",)),
    Statement(_RECUR, "Consider a linear recurrence of the form x_{n+1} = A x_n + b. The state at step n is a superposition of the "
                      "initial state and all accumulated forcing terms. ... the contribution of any single forcing term is traceable "
                      "through the system via the transition matrix A.", EXACT,
              "x_n = A^n x_0 + sum_{k<n} A^k b, proved by induction for every n.", (), (), ("seed.recurrence",), ("recurrence",)),
    Statement(_RECUR, "The update at layer l is not a fixed forcing term - it is computed from x_l. But the additive accumulation "
                      "structure is preserved, and this is what makes individual contributions isolable.", CONDITIONAL,
              "The transformer is the recurrence with A = I and state-dependent forcing: x_L = x_0 + sum_l f_l(x_l), exact without a "
              "post-norm. Each f_l reads every earlier term, so a contribution's effect is isolable only along the direct path.",
              ("residual.expansion", "ablation.direct_effect"), ("residual.expansion/post-norm", "ablation.direct_effect/mlp")),
    Statement(_VIRTUAL, "State evolution: x_{l+1} = x_l + f(x_l)", CONDITIONAL, "Exact without a post-norm.", ("residual.additive",),
              _POST),
    Statement(_VIRTUAL, "Expanded over all layers: x_L = x_0 + sum_l f(x_l)", CONDITIONAL, "Exact without a post-norm (every L, by "
                        "induction).", ("residual.expansion",), ("residual.expansion/post-norm",)),
    Statement(_VIRTUAL, "Each f decomposes as: f = sum_h Attn_h + MLP", CONDITIONAL,
              "f_l = sum_h h_{l,h} + b_O + m_l: exact without an output bias b_O (it belongs to no head), without a post-norm and "
              "without a norm on the sublayers' outputs.", ("seed.layer_split", "attention.head_sum"),
              ("seed.layer_split/output-bias", "seed.layer_split/output-norm")),
    Statement(_VIRTUAL, "The final logits are linear in x_L: logits = W_U x_L", CONDITIONAL,
              "Without a final norm, an unembedding bias, a logit softcap or a transform head (with b_U they are affine).",
              ("seed.logits_linear", "logits.linear_in_final_resid"), ("logits.linear_in_final_resid", "seed.logits_linear/unembed-bias"),
              ("seed.logits_linear",)),
    Statement(_VIRTUAL, "logits = W_U x_L = W_U x_0 + sum_{l,h} W_U Attn_h(x_l)", FALSE,
              "The previous line has f = sum_h Attn_h + MLP; this one drops the MLPs. It is exact only for attention-only models "
              "without output, value and unembedding biases, final or output norms and softcap: in the seed's own setting the MLP "
              "terms are missing.", ("logits.heads_only",), ("logits.heads_only", "logits.heads_only/output-norm"), ("seed.logits_heads",)),
    Statement(_VIRTUAL, "the model's output logits decompose exactly into a sum of per-head and per-layer contributions, each mapped to "
                        "logit space by the unembedding matrix W_U.", CONDITIONAL,
              "logits = sum_c (c / s_final) W_U + biases over x_0, every head and every MLP: exact with the final norm's scale frozen, "
              "without a post-norm and without a logit softcap.", ("logits.decomposition",),
              ("logits.decomposition/post-norm", "logits.decomposition/softcap")),
    Statement(_VIRTUAL, "There is no approximation here. This is an exact identity.", FALSE,
              "Said of the heads-only formula above, which misses the MLP terms, the biases, the final norm's scale and the softcap; "
              "the identity that is exact (logits.decomposition) carries those terms and freezes the scale.",
              ("logits.heads_only", "logits.linear_in_final_resid"), ("logits.heads_only", "logits.linear_in_final_resid")),
    Statement(_VIRTUAL, "It means every head has a direct, isolable contribution to the output", CONDITIONAL,
              "Its direct term is isolable (frozen final scale); ablating the head moves the output by exactly that term only when "
              "nothing downstream reads the head.", ("logits.decomposition", "ablation.direct_effect"), _ABLATE),
    Statement(_ALGO, "When an induction head implements \"copy the token that followed the last occurrence of the current context,\" "
                     "it is executing a subroutine that works identically on novel sequences.", CONDITIONAL,
              "The hand-built circuit predicts the next token on every fresh repeated sequence; but where the current token occurred "
              "several times it copies every earlier successor equally, not the last one's (that needs a recency term in QK).",
              (), (), (), ("induction_ablation", "last_occurrence")),
    # ---------------------------------------------------------------- the copy head
    Statement(_COPY, "For a pure copy, this matrix should behave as a scaled identity on the token embedding subspace ... OV circuit "
                     "signature: W_O W_V ~ lambda I on embedding subspace", EXACT,
              "A definition, realised exactly by circuits.copy_head: W_E W_OV W_U = lambda I.", (), (), (), ("copy_signature",)),
    Statement(_COPY, "Result written to stream: Delta x_dest ~ alpha . x_source", CONDITIONAL,
              "Exact as Delta x_dest = sum_j alpha_j x_j W_OV (attention.ov_circuit); it reduces to alpha x_source only with one-hot "
              "attention, lambda = 1 and W_OV = I on every direction x_source has: a copy head copies the token, not the position.",
              ("attention.ov_circuit",), (), (), ("copy_write",)),
    Statement(_COPY, "Logit contribution: W_U . Delta x_dest ~ alpha . W_U x_source = alpha . logits(source token)", CONDITIONAL,
              "Exact when lambda = 1, attention is one-hot and W_U reads nothing W_OV drops; 'logits(source token)' is the source "
              "token's direct-path logits W_U W_E[t], not the model's logits at the source position.",
              ("attention.ov_circuit",), (), (), ("copy_logits",)),
    Statement(_COPY, "You do not need to run the model on inputs to know that a head implements copying - you can read it from W_O W_V "
                     "directly. And the contribution to the output logits is exactly W_U W_O W_V applied to the source stream", CONDITIONAL,
              "Exact for one-hot attention on the source, without a value bias, for a head reading the raw stream, when nothing but "
              "W_U reads the head (no later MLP, no live final norm).", ("attention.ov_circuit", "ablation.direct_effect", "seed.ov"),
              ("seed.ov/value-bias", "seed.ov/pre-norm") + _ABLATE, (), ("copy_exact",)),
    # ---------------------------------------------------------------- quantitative systems
    Statement(_QUANT, "just as a transformer's output decomposes exactly into per-head contributions to logits, a portfolio's P&L "
                      "decomposes exactly into per-factor contributions. Both are linear superpositions; both admit exact "
                      "attribution.", CONDITIONAL,
              "Exact for a linear factor model (the ablation effects sum to r - epsilon) and for an attention-only transformer as "
              "above; an interaction term (the seed's own momentum-quality product) is attributed to neither factor.",
              ("logits.heads_only",), ("logits.heads_only",), ("seed.factor_model",), ("factor_model",)),
    Statement(_QUANT, "A transformer is a state-evolution system where each step applies a learned, data-dependent linear "
                      "transformation to a shared state.", CONDITIONAL,
              "With the patterns (and norm scales) frozen an attention-only step is linear, affine with biases; an MLP is not a "
              "data-dependent linear map of the state.", ("paths.attention_only", "seed.head_linear"),
              ("paths.attention_only/mlp", "seed.head_linear/value-bias")),
    Statement(_QUANT, "a portfolio's expected return and risk decompose exactly into a sum of factor contributions. ... it enables "
                      "causal interventions: ablate a head (or factor), observe the exact change in output.", CONDITIONAL,
              "The return of a linear model: exact. The risk (variance) sums exactly over Euler contributions, but the ablation "
              "effects double-count every covariance: exact for uncorrelated factors only. A head's ablation: as above.",
              ("ablation.direct_effect",), _ABLATE, ("seed.factor_model", "seed.factor_risk.euler", "seed.factor_risk.ablation"),
              ("factor_risk",)),
    Statement(_QUANT, "In signal processing, the analogous insight is that convolutions compose: two simple filters in sequence "
                      "implement a more complex filter.", EXACT, "(x * g_1) * g_2 = x * (g_1 * g_2): associativity of convolution.",
              (), (), (), ("convolution",)),
    Statement(_QUANT, "In factor models, factor interactions compose: a momentum-quality interaction is the product of two simpler "
                      "signals.", EXACT,
              "A definition (beta_12 f_1 f_2). Its consequence contradicts 'decomposes exactly': its mixed partial is beta_12, which "
              "no sum of one-factor attributions has (the run of the factor-model entry above shows the attribution failing).", (), (),
              ("seed.factor_model.mixed_partial",)),
    # ---------------------------------------------------------------- closing
    Statement(_CLOSE, "a 100-billion-parameter model's output logits are an exact linear superposition of contributions from thousands "
                      "of attention heads, each characterisable by a pair of matrix products", FALSE,
              "Such models have MLPs and a final norm, whose terms the heads do not carry, and rotary, under which QK is not one "
              "matrix.", ("logits.heads_only", "logits.linear_in_final_resid", "attention.qk_circuit"),
              ("logits.heads_only", "logits.linear_in_final_resid", "attention.qk_circuit")),
    # ---------------------------------------------------------------- not formal
    Statement(_CORE, "A transformer is a deterministic computational system. Its weights encode an algorithm. Its forward pass "
                     "executes that algorithm.", INFORMAL, "A framing: the forward pass is deterministic by construction; 'algorithm' "
                     "is not defined."),
    Statement(_WHY, "In a vanilla deep network, layer l+1 receives only the output of layer l ... Causal attribution is "
                    "computationally intractable.", INFORMAL, "About other architectures; no complexity claim is made precise."),
    Statement(_DEEP, "It is closer to a Markov chain over a high-dimensional vector space than to a classical deep network.", INFORMAL,
              "An analogy: the forward pass is deterministic (x_{l+1} is a function of x_l), a Markov chain is stochastic."),
    Statement(_ALGO, "Phase transitions occur when gradient descent discovers a new circuit that enables qualitatively different "
                     "computation", INFORMAL, "About training dynamics, outside what a forward pass can check."),
    Statement(_CLOSE, "The residual stream is a shared register. Attention heads are instruction executers. Layers are program steps.",
              INFORMAL, "Metaphors; the formal content (additive reads and writes) is checked above."),
)
