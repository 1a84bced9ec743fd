"""Hand-derived forward and backpropagation through time (BPTT) for one-layer recurrent layers.

This is the reference floor the benchmarks compare our autodiff engine against, and a
worked example of what reverse mode computes for a recurrent layer: every gradient below
was derived by hand, and ``tests/test_reference_lstm.py`` checks them against finite
differences and against PyTorch.

The equations, parameter names and layouts are exactly PyTorch's (``torch.nn.LSTM``,
``torch.nn.RNN`` with tanh, ``torch.nn.GRU``), for one layer and one direction::

    params = {"weight_ih_l0": (G*H, I), "weight_hh_l0": (G*H, H),
              "bias_ih_l0": (G*H,),     "bias_hh_l0": (G*H,)}

with G = 4 (LSTM, gates i, f, g, o), 3 (GRU, gates r, z, n) or 1 (RNN). Inputs are
time-major, ``x`` is ``(T, B, I)``; states are ``(B, H)``. Arrays may be float32 or
float64 (the weights' dtype is used throughout), NumPy or CuPy (the functions ask
:func:`array_module` which one).

Each layer has two functions:

* ``*_forward(x, h0, [c0,] params)`` returns ``output (T, B, H)``, the final state(s)
  and a cache holding exactly the activations BPTT needs;
* ``*_backward(grad_output, cache, grad_h_n=None, ...)`` returns a dict with the
  gradients of ``x``, ``h0`` (and ``c0``) and of every parameter, under the parameter's
  name. It *consumes* the cache: to save memory it overwrites activations it no longer
  needs with gradients (as our engine frees saved arrays after use), so a cache serves
  one backward pass.

What makes it fast (and what any faster implementation must also do):

* the input projection ``x_t W_ihᵀ + b`` for all T steps is one matmul, hoisted out of
  the time loop, written straight into the buffer that then holds the gates;
* one matmul per step for all gates of the recurrent projection ``h_{t-1} W_hhᵀ``;
* the weight gradients are likewise hoisted out of the backward loop: with the
  pre-activation gradients of all steps stacked as ``dZ (T·B, G·H)``,
  ``dW_ih = dZᵀ X`` and ``dW_hh = dZᵀ H_prev`` are one matmul each;
* every array is allocated once, before the loop; elementwise work writes into
  preallocated buffers with ``out=`` and in-place operators;
* sigmoid is evaluated as ``σ(z) = ½·tanh(½·z) + ½``. Writing every gate as
  ``y = a·tanh(a·z) + b`` (a = ½, b = ½ for a sigmoid gate; a = 1, b = 0 for a tanh
  gate) lets one ``tanh`` call serve all of an LSTM's gates; the inner factor ``a`` is
  folded into the weights once per forward (an exact scaling by a power of two). Its
  derivative in terms of the output is ``dy/dz = (y - lo)(hi - y)`` with
  ``lo = b - a`` and ``hi = b + a = 1``: ``y(1 - y)`` for a sigmoid and ``1 - y²``
  for a tanh, again one expression for all gates.

Notation in the docstrings: ``⊙`` is the elementwise product, ``δv`` the gradient of the
loss with respect to ``v``, ``σ`` the logistic sigmoid, ``Wᵢ`` / ``Uᵢ`` the rows of
``weight_ih`` / ``weight_hh`` belonging to gate ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PARAM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
GATE_COUNT = {"rnn": 1, "lstm": 4, "gru": 3}


# ------------------------------------------------------------------- utilities


def array_module(array: Any) -> Any:
    """``numpy`` for NumPy arrays, ``cupy`` for CuPy arrays."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def init_params(
    kind: str, input_size: int, hidden_size: int, dtype: Any = np.float32, seed: int = 0, xp: Any = np
) -> dict[str, Any]:
    """PyTorch's default initialisation, U(-1/√H, 1/√H), for an ``"lstm"``, ``"gru"`` or ``"rnn"``."""
    rows = GATE_COUNT[kind] * hidden_size
    shapes = {
        "weight_ih_l0": (rows, input_size),
        "weight_hh_l0": (rows, hidden_size),
        "bias_ih_l0": (rows,),
        "bias_hh_l0": (rows,),
    }
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    return {name: xp.asarray(rng.uniform(-bound, bound, shape).astype(dtype)) for name, shape in shapes.items()}


def sgd_step(params: dict[str, Any], grads: dict[str, Any], lr: float) -> None:
    """Plain SGD, in place: ``p ← p - lr · δp`` for every parameter (``δp`` is scaled in place)."""
    for name, param in params.items():
        grad = grads[name]
        grad *= lr
        param -= grad


def _prepare(x: Any, params: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    """The array module, the weights' dtype, and x, W_ih, W_hh in that dtype, x contiguous."""
    weight_ih, weight_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    xp = array_module(weight_ih)
    dtype = weight_ih.dtype
    x = xp.ascontiguousarray(x, dtype=dtype)
    return xp, dtype, x, weight_ih, weight_hh


def _state(xp: Any, state: Any, shape: tuple[int, int], dtype: Any) -> Any:
    return xp.zeros(shape, dtype=dtype) if state is None else state


def _gate_constants(xp: Any, dtype: Any, hidden_size: int, kinds: str) -> tuple[Any, Any, Any]:
    """Per-column ``a``, ``b`` and ``lo`` of ``y = a·tanh(a·z) + b`` for gates ``kinds`` ("s"/"t")."""
    a = {"s": 0.5, "t": 1.0}
    b = {"s": 0.5, "t": 0.0}
    scale = np.repeat([a[kind] for kind in kinds], hidden_size).astype(dtype)
    shift = np.repeat([b[kind] for kind in kinds], hidden_size).astype(dtype)
    return xp.asarray(scale), xp.asarray(shift), xp.asarray(shift - scale)


def _transposed(xp: Any, weight: Any, scale: Any = None) -> Any:
    """``(a ⊙ W)ᵀ``, a scaled by row, as a C-contiguous copy: BLAS multiplies ``h @ Wᵀ`` faster so."""
    result = xp.empty(weight.shape[::-1], dtype=weight.dtype)
    if scale is None:
        result[...] = weight.T
    else:
        xp.multiply(weight.T, scale, out=result)
    return result


def _weight_grads(grad_z: Any, x: Any, h_prev: Any, need_input_grad: bool, weight_ih: Any) -> dict[str, Any]:
    """The hoisted weight gradients: ``δW_ih = Σ_t δZ_tᵀ x_t``, ``δW_hh = Σ_t δZ_tᵀ h_{t-1}``, biases ``Σ δZ``.

    ``grad_z`` is ``(T, B, G·H)``: the gradient of the pre-activations of all steps.
    """
    steps, batch, _ = x.shape
    grad_z_flat = grad_z.reshape(steps * batch, -1)
    grads = {
        "weight_ih_l0": grad_z_flat.T @ x.reshape(steps * batch, -1),
        "weight_hh_l0": grad_z_flat.T @ h_prev.reshape(steps * batch, -1),
        "bias_ih_l0": grad_z_flat.sum(axis=0),
    }
    grads["bias_hh_l0"] = grads["bias_ih_l0"].copy()  # both biases enter z the same way
    grads["x"] = (grad_z_flat @ weight_ih).reshape(x.shape) if need_input_grad else None
    return grads


def _blocks(array: Any, count: int) -> tuple[Any, ...]:
    """Split the last axis of ``array`` into ``count`` equal blocks (views, no copies)."""
    size = array.shape[-1] // count
    return tuple(array[..., k * size : (k + 1) * size] for k in range(count))


def _consume(cache: Any) -> None:
    if cache.consumed:
        raise RuntimeError("this cache was already used by a backward pass (which overwrites it); run forward again")
    cache.consumed = True


# ------------------------------------------------------------------------ LSTM


@dataclass(eq=False)
class LSTMCache:
    """What LSTM BPTT needs. ``h[0] = h0`` and ``h[t+1] = h_t`` (likewise ``c``)."""

    x: Any  # (T, B, I)
    h: Any  # (T+1, B, H); output is the view h[1:]
    c: Any  # (T+1, B, H)
    tanh_c: Any  # (T, B, H): tanh(c_t)
    gates: Any  # (T, B, 4H): i, f, g, o after their nonlinearities
    weight_ih: Any
    weight_hh: Any
    consumed: bool = False


def lstm_forward(x: Any, h0: Any, c0: Any, params: dict[str, Any]) -> tuple[Any, Any, Any, LSTMCache]:
    """One-layer LSTM, PyTorch's equations and gate order (i, f, g, o)::

        z_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh          (B, 4H), split into i, f, g, o
        i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
        c_t = f ⊙ c_{t-1} + i ⊙ g
        h_t = o ⊙ tanh(c_t)

    ``x`` is ``(T, B, I)``, ``h0`` and ``c0`` are ``(B, H)`` or None (zeros). Returns
    ``(output, h_n, c_n, cache)``: ``output`` is ``(T, B, H)``, the h_t of every step.
    ``output``, ``h_n`` and ``c_n`` are views into the cache: copy them before changing
    them in place if you still want to run backward.
    """
    xp, dtype, x, weight_ih, weight_hh = _prepare(x, params)
    steps, batch, _ = x.shape
    hidden = weight_hh.shape[1]
    scale, shift, _ = _gate_constants(xp, dtype, hidden, "ssts")

    h = xp.empty((steps + 1, batch, hidden), dtype=dtype)
    c = xp.empty((steps + 1, batch, hidden), dtype=dtype)
    tanh_c = xp.empty((steps, batch, hidden), dtype=dtype)
    gates = xp.empty((steps, batch, 4 * hidden), dtype=dtype)
    recurrent = xp.empty((batch, 4 * hidden), dtype=dtype)
    product = xp.empty((batch, hidden), dtype=dtype)
    h[0] = _state(xp, h0, (batch, hidden), dtype)
    c[0] = _state(xp, c0, (batch, hidden), dtype)

    # Hoisted: a·(x_t W_ihᵀ + b_ih + b_hh) for all steps in one matmul, into the gate buffer.
    weight_hh_scaled_t = _transposed(xp, weight_hh, scale)
    xp.matmul(x.reshape(steps * batch, -1), _transposed(xp, weight_ih, scale), out=gates.reshape(steps * batch, -1))
    gates += (params["bias_ih_l0"] + params["bias_hh_l0"]) * scale

    input_gate, forget_gate, cell_gate, output_gate = _blocks(gates, 4)
    for t in range(steps):
        gate = gates[t]
        xp.matmul(h[t], weight_hh_scaled_t, out=recurrent)
        gate += recurrent  # a·z_t
        xp.tanh(gate, out=gate)
        gate *= scale
        gate += shift  # i, f, g, o = a·tanh(a·z) + b
        i, f, g, o = input_gate[t], forget_gate[t], cell_gate[t], output_gate[t]
        xp.multiply(f, c[t], out=c[t + 1])
        xp.multiply(i, g, out=product)
        c[t + 1] += product  # c_t = f ⊙ c_{t-1} + i ⊙ g
        xp.tanh(c[t + 1], out=tanh_c[t])
        xp.multiply(o, tanh_c[t], out=h[t + 1])  # h_t = o ⊙ tanh(c_t)

    cache = LSTMCache(x, h, c, tanh_c, gates, weight_ih, weight_hh)
    return h[1:], h[steps], c[steps], cache


def lstm_backward(
    grad_output: Any,
    cache: LSTMCache,
    grad_h_n: Any = None,
    grad_c_n: Any = None,
    need_input_grad: bool = True,
) -> dict[str, Any]:
    """BPTT for :func:`lstm_forward`. Walking t = T-1 … 0, with δh, δc arriving from step t+1::

        δh_t  = grad_output_t + δh                     (δh starts as grad_h_n, δc as grad_c_n)
        δc_t  = δc + δh_t ⊙ o ⊙ (1 - tanh²(c_t))
        δo = δh_t ⊙ tanh(c_t)    δi = δc_t ⊙ g    δg = δc_t ⊙ i    δf = δc_t ⊙ c_{t-1}
        δz_t  = [δi ⊙ i(1-i), δf ⊙ f(1-f), δg ⊙ (1-g²), δo ⊙ o(1-o)]       (B, 4H)
        δc ← δc_t ⊙ f                                   (to step t-1)
        δh ← δz_t W_hh                                  (to step t-1)

    and after the loop, with δZ the stacked δz_t:
    ``δW_ih = δZᵀ X``, ``δW_hh = δZᵀ H_prev``, ``δb_ih = δb_hh = Σ δZ``, ``δx = δZ W_ih``,
    ``δh0 = δh``, ``δc0 = δc``.

    Returns a dict with ``"x"`` (None unless ``need_input_grad``), ``"h0"``, ``"c0"`` and
    the four parameter names. The cache's gate buffer is overwritten with δZ.
    """
    _consume(cache)
    x, h, c, tanh_c, gates = cache.x, cache.h, cache.c, cache.tanh_c, cache.gates
    xp = array_module(gates)
    steps, batch, four_hidden = gates.shape
    hidden = four_hidden // 4
    dtype = gates.dtype
    _, _, lo = _gate_constants(xp, dtype, hidden, "ssts")

    grad_h = xp.zeros((batch, hidden), dtype=dtype) if grad_h_n is None else xp.array(grad_h_n, dtype=dtype)
    grad_c = xp.zeros((batch, hidden), dtype=dtype) if grad_c_n is None else xp.array(grad_c_n, dtype=dtype)
    grad_act = xp.empty((batch, four_hidden), dtype=dtype)  # δ of i, f, g, o (after the nonlinearity)
    temp_h = xp.empty((batch, hidden), dtype=dtype)
    temp_gates = xp.empty((batch, four_hidden), dtype=dtype)
    grad_i, grad_f, grad_g, grad_o = _blocks(grad_act, 4)
    input_gate, forget_gate, cell_gate, output_gate = _blocks(gates, 4)

    for t in range(steps - 1, -1, -1):
        gate = gates[t]
        i, f, g, o = input_gate[t], forget_gate[t], cell_gate[t], output_gate[t]
        if grad_output is not None:
            grad_h += grad_output[t]
        # δc_t = δc + δh_t ⊙ o ⊙ (1 - tanh²(c_t))
        xp.multiply(tanh_c[t], tanh_c[t], out=temp_h)
        xp.subtract(1, temp_h, out=temp_h)
        temp_h *= o
        temp_h *= grad_h
        grad_c += temp_h
        xp.multiply(grad_c, g, out=grad_i)
        xp.multiply(grad_c, c[t], out=grad_f)
        xp.multiply(grad_c, i, out=grad_g)
        xp.multiply(grad_h, tanh_c[t], out=grad_o)
        grad_c *= f  # δc for step t-1
        # δz = δ(act) ⊙ (y - lo)(1 - y), written over the gates, which are no longer needed.
        xp.subtract(gate, lo, out=temp_gates)
        xp.subtract(1, gate, out=gate)
        gate *= temp_gates
        gate *= grad_act
        xp.matmul(gate, cache.weight_hh, out=grad_h)  # δh for step t-1

    grads = _weight_grads(gates, x, h[:-1], need_input_grad, cache.weight_ih)
    grads["h0"], grads["c0"] = grad_h, grad_c
    return grads


# ------------------------------------------------------------------------- RNN


@dataclass(eq=False)
class RNNCache:
    """What tanh-RNN BPTT needs: the inputs and every hidden state, ``h[0] = h0``."""

    x: Any  # (T, B, I)
    h: Any  # (T+1, B, H); output is the view h[1:]
    weight_ih: Any
    weight_hh: Any
    consumed: bool = False


def rnn_forward(x: Any, h0: Any, params: dict[str, Any]) -> tuple[Any, Any, RNNCache]:
    """One-layer Elman RNN with tanh, as ``torch.nn.RNN``::

        h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    Returns ``(output, h_n, cache)``; ``output`` (T, B, H) and ``h_n`` are views into
    the cache.
    """
    xp, dtype, x, weight_ih, weight_hh = _prepare(x, params)
    steps, batch, _ = x.shape
    hidden = weight_hh.shape[1]
    h = xp.empty((steps + 1, batch, hidden), dtype=dtype)
    recurrent = xp.empty((batch, hidden), dtype=dtype)
    h[0] = _state(xp, h0, (batch, hidden), dtype)

    # Hoisted: x_t W_ihᵀ + b_ih + b_hh for all steps, written where the h_t will go.
    xp.matmul(x.reshape(steps * batch, -1), _transposed(xp, weight_ih), out=h[1:].reshape(steps * batch, hidden))
    h[1:] += params["bias_ih_l0"] + params["bias_hh_l0"]
    weight_hh_t = _transposed(xp, weight_hh)
    for t in range(steps):
        xp.matmul(h[t], weight_hh_t, out=recurrent)
        h[t + 1] += recurrent
        xp.tanh(h[t + 1], out=h[t + 1])

    return h[1:], h[steps], RNNCache(x, h, weight_ih, weight_hh)


def rnn_backward(
    grad_output: Any, cache: RNNCache, grad_h_n: Any = None, need_input_grad: bool = True
) -> dict[str, Any]:
    """BPTT for :func:`rnn_forward`. Walking t = T-1 … 0::

        δh_t = grad_output_t + δh          (δh starts as grad_h_n)
        δz_t = δh_t ⊙ (1 - h_t²)
        δh  ← δz_t W_hh                    (to step t-1)

    then ``δW_ih = δZᵀ X``, ``δW_hh = δZᵀ H_prev``, ``δb_ih = δb_hh = Σ δZ``,
    ``δx = δZ W_ih``, ``δh0 = δh``. Returns a dict like :func:`lstm_backward` (no ``c0``).
    """
    _consume(cache)
    x, h = cache.x, cache.h
    xp = array_module(h)
    steps, batch, hidden = h.shape[0] - 1, h.shape[1], h.shape[2]
    dtype = h.dtype

    grad_h = xp.zeros((batch, hidden), dtype=dtype) if grad_h_n is None else xp.array(grad_h_n, dtype=dtype)
    grad_z = xp.empty((steps, batch, hidden), dtype=dtype)
    for t in range(steps - 1, -1, -1):
        if grad_output is not None:
            grad_h += grad_output[t]
        xp.multiply(h[t + 1], h[t + 1], out=grad_z[t])
        xp.subtract(1, grad_z[t], out=grad_z[t])
        grad_z[t] *= grad_h
        xp.matmul(grad_z[t], cache.weight_hh, out=grad_h)

    grads = _weight_grads(grad_z, x, h[:-1], need_input_grad, cache.weight_ih)
    grads["h0"] = grad_h
    return grads


# ------------------------------------------------------------------------- GRU


@dataclass(eq=False)
class GRUCache:
    """What GRU BPTT needs. ``h[0] = h0``; ``hn[t] = h_{t-1} U_nᵀ + b_hn`` (the term r gates)."""

    x: Any  # (T, B, I)
    h: Any  # (T+1, B, H); output is the view h[1:]
    gates: Any  # (T, B, 3H): r, z, n after their nonlinearities
    hn: Any  # (T, B, H)
    weight_ih: Any
    weight_hh: Any
    consumed: bool = False


def gru_forward(x: Any, h0: Any, params: dict[str, Any]) -> tuple[Any, Any, GRUCache]:
    """One-layer GRU, PyTorch's equations and gate order (r, z, n)::

        r = σ(x_t W_rᵀ + b_ir + h_{t-1} U_rᵀ + b_hr)
        z = σ(x_t W_zᵀ + b_iz + h_{t-1} U_zᵀ + b_hz)
        n = tanh(x_t W_nᵀ + b_in + r ⊙ (h_{t-1} U_nᵀ + b_hn))
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}  =  n + z ⊙ (h_{t-1} - n)

    Note that r multiplies ``h U_nᵀ + b_hn`` (the recurrent term including its bias),
    not ``h`` itself. Returns ``(output, h_n, cache)``; ``output`` and ``h_n`` are views
    into the cache.
    """
    xp, dtype, x, weight_ih, weight_hh = _prepare(x, params)
    steps, batch, _ = x.shape
    hidden = weight_hh.shape[1]
    two = 2 * hidden
    scale, shift, _ = _gate_constants(xp, dtype, hidden, "sst")
    bias_ih, bias_hh = params["bias_ih_l0"], params["bias_hh_l0"]

    h = xp.empty((steps + 1, batch, hidden), dtype=dtype)
    gates = xp.empty((steps, batch, 3 * hidden), dtype=dtype)
    hn = xp.empty((steps, batch, hidden), dtype=dtype)
    recurrent = xp.empty((batch, 3 * hidden), dtype=dtype)
    product = xp.empty((batch, hidden), dtype=dtype)
    h[0] = _state(xp, h0, (batch, hidden), dtype)

    # Hoisted: a·(x_t W_ihᵀ + b_ih), plus b_hh for r and z (b_hn must stay inside r ⊙ (...)).
    xp.matmul(x.reshape(steps * batch, -1), _transposed(xp, weight_ih, scale), out=gates.reshape(steps * batch, -1))
    gates += (bias_ih + xp.concatenate([bias_hh[:two], xp.zeros_like(bias_hh[two:])])) * scale
    weight_hh_scaled_t = _transposed(xp, weight_hh, scale)
    bias_hn = bias_hh[two:]

    reset_gate, update_gate, new_gate = _blocks(gates, 3)
    reset_update = gates[..., :two]
    for t in range(steps):
        rz, r, z, n = reset_update[t], reset_gate[t], update_gate[t], new_gate[t]
        xp.matmul(h[t], weight_hh_scaled_t, out=recurrent)
        rz += recurrent[:, :two]
        xp.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5  # r, z = σ(...) = ½·tanh(½·(...)) + ½
        xp.add(recurrent[:, two:], bias_hn, out=hn[t])
        xp.multiply(r, hn[t], out=product)
        n += product
        xp.tanh(n, out=n)
        xp.subtract(h[t], n, out=h[t + 1])
        h[t + 1] *= z
        h[t + 1] += n  # h_t = n + z ⊙ (h_{t-1} - n)

    return h[1:], h[steps], GRUCache(x, h, gates, hn, weight_ih, weight_hh)


def gru_backward(
    grad_output: Any, cache: GRUCache, grad_h_n: Any = None, need_input_grad: bool = True
) -> dict[str, Any]:
    """BPTT for :func:`gru_forward`. Walking t = T-1 … 0, with ``hn = h_{t-1} U_nᵀ + b_hn``::

        δh_t  = grad_output_t + δh                  (δh starts as grad_h_n)
        δz_n  = δh_t ⊙ (1 - z) ⊙ (1 - n²)          gradient of n's pre-activation
        δz_z  = δh_t ⊙ (h_{t-1} - n) ⊙ z(1 - z)
        δz_r  = δz_n ⊙ hn ⊙ r(1 - r)
        δhn   = δz_n ⊙ r                            gradient of h_{t-1} U_nᵀ + b_hn
        δh   ← δh_t ⊙ z + [δz_r, δz_z] U_rz + δhn U_n     (to step t-1; U_rz: the r and z rows)

    The input side sees ``δX_t = [δz_r, δz_z, δz_n]`` and the recurrent side
    ``δR_t = [δz_r, δz_z, δhn]``. After the loop: ``δW_ih = δXᵀ X``, ``δb_ih = Σ δX``,
    ``δW_hh = δRᵀ H_prev``, ``δb_hh = Σ δR``, ``δx = δX W_ih``, ``δh0 = δh``.

    The cache's gate buffer is overwritten with δX and its ``hn`` buffer with δhn.
    """
    _consume(cache)
    x, h, gates, hn = cache.x, cache.h, cache.gates, cache.hn
    xp = array_module(gates)
    steps, batch, three_hidden = gates.shape
    hidden = three_hidden // 3
    two = 2 * hidden
    dtype = gates.dtype
    weight_hh = cache.weight_hh
    weight_hh_rz, weight_hh_n = weight_hh[:two], weight_hh[two:]

    grad_h = xp.zeros((batch, hidden), dtype=dtype) if grad_h_n is None else xp.array(grad_h_n, dtype=dtype)
    grad_z_act = xp.empty((batch, hidden), dtype=dtype)  # δ of z after its sigmoid
    grad_n_act = xp.empty((batch, hidden), dtype=dtype)  # δ of n after its tanh
    direct = xp.empty((batch, hidden), dtype=dtype)  # δh_t ⊙ z, the path that skips the gates
    temp = xp.empty((batch, hidden), dtype=dtype)

    reset_gate, update_gate, new_gate = _blocks(gates, 3)
    reset_update = gates[..., :two]
    for t in range(steps - 1, -1, -1):
        r, z, n = reset_gate[t], update_gate[t], new_gate[t]
        if grad_output is not None:
            grad_h += grad_output[t]
        xp.subtract(h[t], n, out=grad_z_act)
        grad_z_act *= grad_h  # δz = δh_t ⊙ (h_{t-1} - n)
        xp.multiply(grad_h, z, out=direct)
        xp.subtract(1, z, out=grad_n_act)  # 1 - z
        z *= grad_n_act
        z *= grad_z_act  # z ← δz_z = δz ⊙ z(1 - z)
        grad_n_act *= grad_h  # δn = δh_t ⊙ (1 - z)
        xp.multiply(n, n, out=n)
        xp.subtract(1, n, out=n)
        n *= grad_n_act  # n ← δz_n = δn ⊙ (1 - n²)
        xp.subtract(1, r, out=temp)
        temp *= r
        temp *= hn[t]  # r(1 - r) ⊙ hn, before hn is overwritten
        xp.multiply(n, r, out=hn[t])  # hn ← δhn = δz_n ⊙ r
        xp.multiply(temp, n, out=r)  # r ← δz_r
        # δh for step t-1: δh_t ⊙ z + [δz_r, δz_z] U_rz + δhn U_n
        xp.matmul(reset_update[t], weight_hh_rz, out=grad_h)
        xp.matmul(hn[t], weight_hh_n, out=temp)
        grad_h += temp
        grad_h += direct

    # The input side gets δX = [δz_r, δz_z, δz_n] (now in gates); the recurrent side
    # δR = [δz_r, δz_z, δhn] (the first two blocks of gates, and hn).
    rows = steps * batch
    grad_input_side = gates.reshape(rows, three_hidden)
    grad_hn = hn.reshape(rows, hidden)
    h_prev = h[:-1].reshape(rows, hidden)
    grad_weight_hh = xp.empty_like(weight_hh)
    xp.matmul(grad_input_side[:, :two].T, h_prev, out=grad_weight_hh[:two])
    xp.matmul(grad_hn.T, h_prev, out=grad_weight_hh[two:])
    grad_bias_ih = grad_input_side.sum(axis=0)
    return {
        "x": (grad_input_side @ cache.weight_ih).reshape(x.shape) if need_input_grad else None,
        "h0": grad_h,
        "weight_ih_l0": grad_input_side.T @ x.reshape(rows, -1),
        "weight_hh_l0": grad_weight_hh,
        "bias_ih_l0": grad_bias_ih,
        "bias_hh_l0": xp.concatenate([grad_bias_ih[:two], grad_hn.sum(axis=0)]),
    }
