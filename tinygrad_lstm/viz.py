"""Draw the graph behind a tensor: Graphviz DOT text, and rendering when Graphviz is installed.

The graph is the one backward walks. Every recorded op is a node (a ``Context``) with
``node.name`` (the op's name), ``node.output_meta`` (one ``(shape, dtype)`` per output)
and ``node.edges``, one per forward input: None (no gradient goes there), a leaf Tensor
that requires grad, or ``(parent node, output index)``. Inputs that do not require grad
are not recorded, so they do not appear.

``backward()`` frees each node as it goes (unless ``retain_graph=True``): draw first.

    dot_text = to_dot(loss, names=dict(model.named_parameters()))
    render(loss, "graph.svg")  # needs the `dot` program from Graphviz
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .tensor import Tensor

FORMATS = ("svg", "png", "pdf")


class GraphvizNotFoundError(RuntimeError):
    """``render`` needs Graphviz's ``dot`` program and it is not installed."""


def _quote(text: str) -> str:
    """A DOT string literal; a newline becomes DOT's centred line break ``\\n``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _describe(shape: Any, dtype: Any) -> str:
    return f"{tuple(shape)} {dtype}"


def to_dot(
    tensors: Tensor | Sequence[Tensor], names: Mapping[str, Tensor] | None = None, title: str | None = None
) -> str:
    """Graphviz DOT text for the graph behind ``tensors`` (one Tensor or several).

    Op nodes are boxes with the op's name and output shape(s); leaves that require grad
    (the tensors whose ``.grad`` backward fills: inputs, parameters) are blue ellipses,
    labelled with their name from ``names`` (e.g. ``dict(model.named_parameters())``)
    when given; the tensors drawn are grey ellipses at the bottom. An edge from a
    multi-output op (split, chunk, unbind) says which output it carries.
    """
    roots = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    leaf_names = {id(tensor): name for name, tensor in (names or {}).items()}
    lines = [
        "digraph autograd {",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [arrowsize=0.6, fontname="Helvetica", fontsize=9];',
    ]
    if title:
        lines.append(f'  labelloc="t"; label={_quote(title)};')
    node_ids: dict[int, str] = {}
    leaf_ids: dict[int, str] = {}

    def leaf_id(leaf: Tensor) -> str:
        if id(leaf) not in leaf_ids:
            leaf_ids[id(leaf)] = f"leaf{len(leaf_ids)}"
            name = leaf_names.get(id(leaf), "leaf")
            label = f"{name}\n{_describe(leaf.shape, leaf.dtype)}\nrequires_grad"
            lines.append(
                f"  {leaf_ids[id(leaf)]} [label={_quote(label)}, shape=ellipse, style=filled, fillcolor=lightblue];"
            )
        return leaf_ids[id(leaf)]

    def node_id(node: Any) -> str:
        return node_ids.setdefault(id(node), f"op{len(node_ids)}")

    stack = []
    for index, root in enumerate(roots):
        label = f"{leaf_names.get(id(root), 'output' if len(roots) == 1 else f'output {index}')}\n"
        label += _describe(root.shape, root.dtype)
        lines.append(f"  out{index} [label={_quote(label)}, shape=ellipse, style=filled, fillcolor=lightgrey];")
        if root._node is not None:
            lines.append(f"  {node_id(root._node)} -> out{index};")
            stack.append(root._node)
        elif root.requires_grad:
            lines.append(f"  {leaf_id(root)} -> out{index} [style=dashed];")

    drawn: set[int] = set()
    while stack:  # iterative: graphs of long sequences are deeper than Python's recursion limit
        node = stack.pop()
        if id(node) in drawn:
            continue
        drawn.add(id(node))
        if getattr(node, "freed", False):
            raise ValueError(
                f"the graph behind this tensor was freed by backward() (at a {node.name} node); "
                "call to_dot before backward(), or pass retain_graph=True to backward()"
            )
        shapes = [_describe(shape, dtype) for shape, dtype in node.output_meta]
        if len(shapes) > 3:
            shapes = [f"{len(shapes)} outputs, each {shapes[0]}" if len(set(shapes)) == 1 else f"{len(shapes)} outputs"]
        lines.append(f"  {node_id(node)} [label={_quote(node.name + chr(10) + chr(10).join(shapes))}, shape=box];")
        for edge in node.edges:
            if edge is None:
                continue
            if isinstance(edge, Tensor):
                lines.append(f"  {leaf_id(edge)} -> {node_id(node)};")
                continue
            parent, output_index = edge
            attributes = f" [label={_quote(f'[{output_index}]')}]" if getattr(parent, "multi_output", False) else ""
            lines.append(f"  {node_id(parent)} -> {node_id(node)}{attributes};")
            stack.append(parent)
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    tensors: Tensor | Sequence[Tensor],
    path: str | os.PathLike,
    format: str | None = None,  # noqa: A002  (the name Graphviz uses)
    names: Mapping[str, Tensor] | None = None,
    title: str | None = None,
) -> Path:
    """Draw the graph behind ``tensors`` to ``path`` as SVG, PNG or PDF with Graphviz's ``dot``.

    ``format`` defaults to the path's suffix (``.svg``, ``.png``, ``.pdf``). Raises
    :class:`GraphvizNotFoundError` when the ``dot`` program is not installed.
    """
    path = Path(path)
    output_format = (format or path.suffix.lstrip(".") or "svg").lower()
    if output_format not in FORMATS:
        raise ValueError(f"render: format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    text = to_dot(tensors, names=names, title=title)
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError(
            "render needs the `dot` program from Graphviz, which is not installed (not on PATH). "
            "Install Graphviz (apt-get install graphviz, brew install graphviz or conda install graphviz), "
            "or save to_dot(...) to a .dot file and render it elsewhere."
        )
    result = subprocess.run([dot, f"-T{output_format}", "-o", str(path)], input=text, text=True, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"Graphviz dot failed (exit {result.returncode}): {result.stderr.strip()}")
    return path
