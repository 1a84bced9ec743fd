"""The command line. For now: a short example of the engine at work."""

from __future__ import annotations

import argparse

import tinygrad_lstm as tl
from tinygrad_lstm.testing import gradcheck


def example() -> int:
    """Differentiate a small expression and confirm the gradient by finite differences."""
    tl.manual_seed(0)
    x = tl.randn(3, dtype=tl.float64, requires_grad=True)
    w = tl.randn(3, 3, dtype=tl.float64, requires_grad=True)
    loss = (w @ x).tanh().sum()
    loss.backward()
    print("x =", x)
    print("loss = sum(tanh(w @ x)) =", loss.item())
    print("dloss/dx =", x.grad)
    ok = gradcheck(lambda x, w: (w @ x).tanh().sum(), (x, w))
    print("gradcheck against finite differences:", "passed" if ok else "FAILED")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinygrad-lstm", description=__doc__)
    parser.parse_args(argv)
    return example()
