"""Evidence: what checking one claim on one forward pass found.

A verdict is one of

============== ===============================================================
PASS           every evaluated instance agrees within the tolerance
FAIL           some instance differs by more than the tolerance (``where`` says which)
NOT_APPLICABLE the architecture violates one of the claim's conditions (``detail`` says which, and why it matters)
INCONCLUSIVE   the claim could not be evaluated (an atom the trace cannot supply); never a PASS
============== ===============================================================

Errors are two-sided and relative to the scale of the quantity compared:
``max_rel = max|lhs - rhs| / scale`` per instance, the worst over instances, where
``scale`` is ``max|rhs|`` or, where larger, the largest magnitude of the terms that
make up ``rhs`` (a product ``a b`` counts as ``|a| |b|``), so that a result small by
cancellation is measured against what cancelled, as float rounding is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Evidence", "Where", "PASS", "FAIL", "NOT_APPLICABLE", "INCONCLUSIVE", "VERDICTS"]

PASS, FAIL, NOT_APPLICABLE, INCONCLUSIVE = "PASS", "FAIL", "NOT_APPLICABLE", "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, NOT_APPLICABLE, INCONCLUSIVE)


@dataclass(frozen=True)
class Where:
    """The worst place: the identity instance (or rerun comparison), its layer and head, and the batch row and position."""

    instance: str
    layer: int | None = None
    head: int | None = None
    batch: int | None = None
    position: int | None = None

    def __str__(self) -> str:
        parts = [self.instance]
        parts += [f"{name} {value}" for name, value in (("layer", self.layer), ("head", self.head), ("batch", self.batch),
                                                        ("pos", self.position)) if value is not None]
        return ", ".join(parts)


@dataclass(frozen=True)
class Evidence:
    """The outcome of ``Claim.check``: verdict, measured errors, where, the tolerance and why it has that size.

    ``max_abs`` and ``max_rel`` are None when nothing was evaluated (NOT_APPLICABLE,
    INCONCLUSIVE). ``detail`` says what was evaluated, skipped, or why not.
    """

    claim: str
    verdict: str
    max_abs: float | None = None
    max_rel: float | None = None
    where: Where | None = None
    tolerance: float | None = None
    tolerance_reason: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"Evidence: verdict={self.verdict!r} must be one of {VERDICTS}")

    @property
    def ok(self) -> bool:
        """True for PASS and NOT_APPLICABLE: nothing was found wrong where the claim applies."""
        return self.verdict in (PASS, NOT_APPLICABLE)

    def __str__(self) -> str:
        head = f"{self.verdict} {self.claim}"
        if self.max_rel is None:
            return f"{head}: {self.detail}"
        cmp = "<=" if self.verdict == PASS else ">"
        return (f"{head}: rel {self.max_rel:.2e} {cmp} {self.tolerance:g} (abs {self.max_abs:.2e}) at {self.where}"
                + (f"; {self.detail}" if self.detail else ""))
