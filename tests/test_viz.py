"""viz.to_dot draws the recorded graph; viz.render needs Graphviz and says so when it is missing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn, viz


def small_graph():
    x = tl.Tensor(np.ones((2, 3)), requires_grad=True)
    w = tl.Tensor(np.ones((3, 4)), requires_grad=True)
    loss = (x @ w).tanh().sum()
    return x, w, loss


def edges(dot: str) -> list[str]:
    return [line.strip() for line in dot.splitlines() if "->" in line]


def test_to_dot_shows_ops_shapes_and_leaves():
    x, w, loss = small_graph()
    dot = viz.to_dot(loss, names={"x": x, "w": w})
    assert dot.startswith("digraph autograd {") and dot.rstrip().endswith("}")
    assert '"MatMul\\n(2, 4) float64"' in dot
    assert '"Tanh\\n(2, 4) float64"' in dot
    assert '"Sum\\n() float64"' in dot
    assert '"x\\n(2, 3) float64\\nrequires_grad"' in dot
    assert '"w\\n(3, 4) float64\\nrequires_grad"' in dot
    assert dot.count("fillcolor=lightblue") == 2  # the two leaves that require grad
    assert '"output\\n() float64"' in dot
    # x -> MatMul, w -> MatMul, MatMul -> Tanh, Tanh -> Sum, Sum -> output
    assert len(edges(dot)) == 5


def test_to_dot_leaves_out_what_needs_no_gradient_and_labels_multi_outputs():
    x = tl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    constant = tl.Tensor(np.ones((2, 2)))
    first, second = x.split([1, 2], axis=1)
    y = (first * 2.0).sum() + (second * constant).sum()
    dot = viz.to_dot(y)
    assert "Split\\n(2, 1) float64\\n(2, 2) float64" in dot
    assert '[label="[0]"]' in dot and '[label="[1]"]' in dot
    assert dot.count("requires_grad") == 1  # x only: the constant is not part of the graph
    assert '"leaf\\n(2, 3) float64\\nrequires_grad"' in dot  # unnamed leaves say "leaf"


def test_to_dot_of_an_lstm_step_names_parameters_and_both_outputs():
    tl.manual_seed(0)
    cell = nn.LSTMCell(3, 2)
    h, c = cell(tl.randn(4, 3))
    dot = viz.to_dot((h, c), names={"h'": h, "c'": c, **dict(cell.named_parameters())})
    for text in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "Sigmoid", "Tanh", "Split", "h'\\n(4, 2)", "c'\\n"):
        assert text in dot, text
    assert dot.count("Sigmoid\\n") == 3  # input, forget and output gates


def test_to_dot_is_iterative_for_deep_graphs():
    x = tl.Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(3000):  # deeper than Python's default recursion limit
        y = y * 1.0
    dot = viz.to_dot(y)
    assert dot.count("Mul\\n") == 3000


def test_to_dot_after_backward_explains_the_freed_graph():
    _, _, loss = small_graph()
    loss.backward()
    with pytest.raises(ValueError, match="retain_graph=True"):
        viz.to_dot(loss)


def test_to_dot_of_a_plain_tensor():
    dot = viz.to_dot(tl.Tensor([1.0, 2.0]))
    assert len(edges(dot)) == 0 and "output\\n(2,) float32" in dot


def test_render_without_graphviz_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    _, _, loss = small_graph()
    with pytest.raises(viz.GraphvizNotFoundError, match="Graphviz") as error:
        viz.render(loss, tmp_path / "graph.svg")
    assert "to_dot" in str(error.value)  # and says how to do without it
    assert not (tmp_path / "graph.svg").exists()


def test_render_rejects_unknown_formats(tmp_path):
    _, _, loss = small_graph()
    with pytest.raises(ValueError, match="svg, png, pdf"):
        viz.render(loss, tmp_path / "graph.gif")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_render_with_graphviz(tmp_path, suffix):
    _, _, loss = small_graph()
    path = viz.render(loss, tmp_path / f"graph.{suffix}")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in data
