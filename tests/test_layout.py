"""The package layout and the public surface: subpackages exist, __all__ names resolve, layers import downward only."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

SUBPACKAGES = ["circuitproof", "circuitproof.symbolic", "circuitproof.numeric", "circuitproof.properties", "circuitproof.verify"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_has_docstring_and_all(name):
    module = importlib.import_module(name)
    assert module.__doc__ and len(module.__doc__.strip()) > 40
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.__all__ names {public!r}, which does not exist"


def test_error_hierarchy():
    import circuitproof as cp

    for name in ("ShapeError", "WeightsError", "UnsupportedError"):
        assert issubclass(getattr(cp, name), cp.CircuitproofError)


def test_numeric_does_not_import_sympy_and_symbolic_does_not_import_torch():
    code = (
        "import sys; import circuitproof.numeric; assert 'sympy' not in sys.modules, 'numeric imported sympy';"
        "import circuitproof.symbolic; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys; import circuitproof.symbolic; assert 'torch' not in sys.modules, 'symbolic imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
