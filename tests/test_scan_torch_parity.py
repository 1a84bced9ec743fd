"""The compiled layers with checkpointing against PyTorch, in float64.

``tests/test_torch_parity.py`` already runs the default (compiled) layers against
PyTorch. Here the loop is longer, and checkpointing recomputes the steps between kept
states in backward: every k from 1 (keep every state) past T (one segment), with
packed-sequence lengths, both directions and stacked layers, outputs, final states and
every gradient to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_torch_parity import (  # noqa: E402  (after the importorskip: it needs torch too)
    _assert_same,
    _assert_same_gradients,
    _backward_with_random_weights,
    _flat,
    _leaf_pair,
    _ours_and_theirs,
    _packed_torch_run,
    _state_pair,
)

STEPS = 11
CASES = [
    dict(checkpoint=1, num_layers=1),
    dict(checkpoint=3, num_layers=2, bidirectional=True, lengths=[11, 4, 7]),
    dict(checkpoint=4, num_layers=1, batch_first=True, with_state=True, lengths=[2, 11, 9]),
    dict(checkpoint=11, num_layers=2, bidirectional=True, with_state=True),
    dict(checkpoint=20, num_layers=1, bidirectional=True, lengths=[1, 5, 11]),
]


def _case_id(case: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in case.items())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_checkpointed_layers_match_torch(kind: str, case: dict) -> None:
    case = dict(case)
    with_state, lengths = case.pop("with_state", False), case.pop("lengths", None)
    checkpoint = case.pop("checkpoint")
    batch, input_size, hidden = 3, 3, 4
    ours, theirs = _ours_and_theirs(kind, input_size, hidden, seed=5, **case)
    ours.checkpoint = checkpoint
    assert ours.compile and f"checkpoint={checkpoint}" in repr(ours)
    rng = np.random.default_rng(5)
    batch_first = case.get("batch_first", False)
    shape = (batch, STEPS, input_size) if batch_first else (STEPS, batch, input_size)
    x, their_x = _leaf_pair(rng.normal(size=shape))
    leaves = [("x", x, their_x)]
    state = their_state = None
    if with_state:
        directions = 2 if case.get("bidirectional") else 1
        state, their_state, state_leaves = _state_pair(kind, (case["num_layers"] * directions, batch, hidden), rng)
        leaves += state_leaves
    result = _flat(ours(x, state, lengths=lengths))
    if lengths is None:
        their_result = _flat(theirs(their_x, their_state))
    else:
        their_result = _flat(_packed_torch_run(theirs, their_x, their_state, lengths, batch_first))
    for name, got, expected in zip(("output", "h_n", "c_n"), result, their_result):
        _assert_same(got, expected, name)
    _backward_with_random_weights(result, their_result, rng)
    _assert_same_gradients(ours, theirs, leaves)
