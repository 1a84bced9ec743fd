"""Layers, cells, losses: everything composed from the public Tensor ops."""

from . import functional, utils
from .fused import FusedLSTMCell, FusedLSTMStep
from .layers import Dropout, Embedding, Linear
from .module import LoadResult, Module, ModuleList, Parameter, Sequential
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, Recurrent, RecurrentCell, RNNCell, detach_state, run_cell

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Dropout",
    "Embedding",
    "FusedLSTMCell",
    "FusedLSTMStep",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "LoadResult",
    "Module",
    "ModuleList",
    "Parameter",
    "RNNCell",
    "Recurrent",
    "RecurrentCell",
    "Sequential",
    "detach_state",
    "functional",
    "run_cell",
    "utils",
]
