"""Tools to verify gradients.

* ``gradcheck`` / ``check_gradients``: reverse mode against finite differences; on a
  failure the report names the op whose VJP is wrong (``localize``).
* ``localize_ops``: re-check every op of a graph on its own inputs.
* ``gradgradcheck`` / ``check_second_derivatives``: second derivatives (the VJP of the
  VJP) against finite differences, localised to the first op that is wrong.
* ``recurrent_report``: a recurrent cell or layer's gradient errors per time step and gate.
* ``check_cell`` (needs hypothesis): one-call gradient and contract checks of a cell.
* ``strategies`` (needs hypothesis): Hypothesis strategies for tensors and recurrent shapes.
"""

from .gradcheck import GradcheckError, GradcheckReport, Mismatch, check_gradients, gradcheck
from .gradgradcheck import SecondOrderLocalization, check_second_derivatives, gradgradcheck, localize_second_order
from .localize import Localization, localize_ops
from .recurrent_report import RecurrentReport, check_step, recurrent_report

__all__ = [
    "CellCheckError",
    "CellCheckReport",
    "GradcheckError",
    "GradcheckReport",
    "Localization",
    "Mismatch",
    "RecurrentReport",
    "SecondOrderLocalization",
    "check_cell",
    "check_gradients",
    "check_second_derivatives",
    "check_step",
    "gradcheck",
    "gradgradcheck",
    "localize_ops",
    "localize_second_order",
    "recurrent_report",
    "strategies",
]

_NEED_HYPOTHESIS = {"check_cell", "CellCheckError", "CellCheckReport"}


def __getattr__(name: str):
    # Imported on demand: they need hypothesis (the test extra). import_module, not
    # ``from . import``, which would look the name up here again and recurse.
    import importlib

    if name == "strategies":
        return importlib.import_module(f"{__name__}.strategies")
    if name in _NEED_HYPOTHESIS:
        return getattr(importlib.import_module(f"{__name__}.cell_check"), name)
    raise AttributeError(f"module 'tinygrad_lstm.testing' has no attribute {name!r}")
