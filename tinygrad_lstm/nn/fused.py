"""An opt-in fused LSTM step: one op with a hand-derived VJP, for comparison and speed.

Every built-in cell is composed from the public ops, and ``nn.LSTM`` always is. This
module is the one deliberate exception, kept apart and never used by default: the whole
LSTM step as a single ``Function``, whose backward is derived by hand. It shows what the
autodiff engine saves you from writing, and what fusing a step buys (one node per step
instead of twelve). ``FusedLSTMCell`` is ``LSTMCell`` with this step; run it over
sequences with ``nn.Recurrent(nn.FusedLSTMCell, input_size, hidden_size, ...)``. Its
parameters have the same names and layout, so state dicts move between the two.
The tests check it equals the composed cell and gradcheck its VJP.
"""

from __future__ import annotations

from ..tensor import Function, Tensor
from ..tensor.ops import Sigmoid
from .recurrent import LSTMCell, State


class FusedLSTMStep(Function):
    """(h', c') from (x_t, h, c, W_hh), where x_t already holds x W_ihᵀ + b_ih + b_hh.

    Forward, with z = x_t + h W_hhᵀ split into the gate blocks (i, f, g, o)::

        i, f, o = σ(z_i), σ(z_f), σ(z_o);  g = tanh(z_g)
        c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c')

    VJP, from the gradients δh' and δc' arriving at the outputs::

        δc_total = δc' + δh' ⊙ o ⊙ (1 - tanh²(c'))
        δz_i = δc_total ⊙ g ⊙ i(1 - i)      δz_f = δc_total ⊙ c ⊙ f(1 - f)
        δz_g = δc_total ⊙ i ⊙ (1 - g²)      δz_o = δh' ⊙ tanh(c') ⊙ o(1 - o)
        δx_t = δz;  δh = δz W_hh;  δc = δc_total ⊙ f;  δW_hh = δzᵀ h
    """

    @staticmethod
    def forward(ctx, x_t, h, c, weight_hh):
        xp = ctx.xp
        hidden = h.shape[1]
        gates = x_t + h @ weight_hh.T
        activations = Sigmoid.of_array(xp, gates)  # σ for all blocks at once, the engine's stable formula
        activations[:, 2 * hidden : 3 * hidden] = xp.tanh(gates[:, 2 * hidden : 3 * hidden])  # g uses tanh
        i, f, g, o = (activations[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c_next = f * c + i * g
        tanh_c = xp.tanh(c_next)
        h_next = o * tanh_c
        ctx.save_for_backward(h, c, weight_hh, activations, tanh_c)
        return h_next, c_next

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        h, c, weight_hh, activations, tanh_c = ctx.saved_tensors
        hidden = h.shape[1]
        i, f, g, o = (activations[:, k * hidden : (k + 1) * hidden] for k in range(4))
        grad_c_total = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
        grad_gates = ctx.xp.concatenate(
            [
                grad_c_total * g * i * (1 - i),
                grad_c_total * c * f * (1 - f),
                grad_c_total * i * (1 - g * g),
                grad_h * tanh_c * o * (1 - o),
            ],
            axis=1,
        )
        need_x, need_h, need_c, need_weight = ctx.needs_input_grad
        return (
            grad_gates if need_x else None,
            grad_gates @ weight_hh if need_h else None,
            grad_c_total * f if need_c else None,
            grad_gates.T @ h if need_weight else None,
        )


class FusedLSTMCell(LSTMCell):
    """``LSTMCell`` whose step is the single fused op above (opt-in; same parameters)."""

    def step(self, x_t: Tensor, state: State) -> State:
        h, c = state
        return FusedLSTMStep.apply(x_t, h, c, self.weight_hh)
