"""Layers, cells, losses: everything composed from the public Tensor ops."""

from . import functional, utils
from .activation import ReLU, Sigmoid, Tanh
from .fused import FusedLSTMCell, FusedLSTMStep
from .layers import Dropout, Embedding, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import LoadResult, Module, ModuleList, Parameter, Sequential
from .recurrent import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    Recurrent,
    RecurrentCell,
    RNNCell,
    detach_state,
    run_cell,
    written_out_loops,
)

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "FusedLSTMCell",
    "FusedLSTMStep",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "LoadResult",
    "MSELoss",
    "Module",
    "ModuleList",
    "Parameter",
    "RNNCell",
    "ReLU",
    "Recurrent",
    "RecurrentCell",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "detach_state",
    "functional",
    "run_cell",
    "utils",
    "written_out_loops",
]
