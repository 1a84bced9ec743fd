"""nn.Module: registration, names, state_dict round trips and rejections, modes, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn


class Model(nn.Module):
    """An LSTM with a linear head: the shape of most models in this project."""

    def __init__(self, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, num_layers=num_layers, dropout=dropout)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output)


def _snapshot(module: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.numpy() for name, p in module.named_parameters()}


def _assert_unchanged(module: nn.Module, before: dict[str, np.ndarray]) -> None:
    after = _snapshot(module)
    assert list(after) == list(before)
    for name, value in before.items():
        assert after[name].dtype == value.dtype, name
        np.testing.assert_array_equal(after[name], value, err_msg=name)


# -------------------------------------------------------------- registration


def test_attribute_assignment_registers_parameters_and_submodules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(tl.ones(1))
            self.plain = tl.ones(2)  # a plain Tensor is not a parameter
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1, bias=False)])
            self.body = nn.Sequential(nn.Linear(1, 3), nn.Dropout(0.1))
            self.note = "not a module"

    net = Net()
    assert [name for name, _ in net.named_parameters()] == [
        "scale",
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.1.weight",
        "body.0.weight",
        "body.0.bias",
    ]
    assert [name for name, _ in net.named_modules()] == [
        "",
        "blocks",
        "blocks.0",
        "blocks.1",
        "body",
        "body.0",
        "body.1",
    ]
    assert all(p.requires_grad for p in net.parameters())
    assert list(net.parameters()) == [p for _, p in net.named_parameters()]


def test_reassignment_and_deletion_update_the_registry():
    net = nn.Sequential(nn.Linear(2, 2))
    layer = net[0]
    layer.bias = None  # replacing a parameter with None unregisters it
    assert [name for name, _ in net.named_parameters()] == ["0.weight"]
    layer.bias = nn.Parameter(tl.zeros(2))  # and a new one is registered again, at the end
    del layer.weight
    assert [name for name, _ in net.named_parameters()] == ["0.bias"]


def test_assignment_before_super_init_explains_the_fix():
    class Broken(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(tl.ones(1))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_parameters_order_is_stable_and_names_are_dotted_like_pytorch():
    model = Model(num_layers=2)
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "rnn.bias_ih_l0",
        "rnn.bias_hh_l0",
        "rnn.weight_ih_l1",
        "rnn.weight_hh_l1",
        "rnn.bias_ih_l1",
        "rnn.bias_hh_l1",
        "head.weight",
        "head.bias",
    ]
    assert [id(p) for p in model.parameters()] == [id(p) for p in model.parameters()]
    assert list(model.state_dict()) == names
    assert model.state_dict()["rnn.weight_ih_l1"].shape == (16, 4)


def test_shared_parameters_and_modules_are_listed_once():
    shared = nn.Linear(2, 2)
    net = nn.Sequential(shared, shared)
    assert [name for name, _ in net.named_parameters()] == ["0.weight", "0.bias"]
    net.tied = nn.Parameter(tl.ones(1))
    net.again = net.tied
    assert len(list(net.parameters())) == 3


def test_module_list_and_sequential():
    blocks = nn.ModuleList()
    blocks.append(nn.Linear(2, 3)).append(nn.Linear(3, 1))
    assert len(blocks) == 2 and isinstance(blocks[1], nn.Linear) and list(blocks) == [blocks[0], blocks[1]]
    with pytest.raises(TypeError, match="ModuleList holds Modules"):
        blocks.append(lambda x: x)
    model = nn.Sequential(*blocks)
    x = tl.Tensor(np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32))
    np.testing.assert_array_equal(model(x).numpy(), blocks[1](blocks[0](x)).numpy())


# -------------------------------------------------------------------- state


def test_state_dict_values_are_host_copies():
    model = Model()
    state = model.state_dict()
    assert all(type(value) is np.ndarray for value in state.values())
    before = _snapshot(model)
    for value in state.values():
        value += 100.0
    _assert_unchanged(model, before)


def test_load_state_dict_takes_numpy_tensors_and_torch_tensors():
    source, target = Model(), Model()
    target.astype(tl.float64)
    expected = source.state_dict()
    mappings = [
        expected,
        {name: tl.Tensor(value, requires_grad=True) for name, value in expected.items()},
        {name: p for name, p in source.named_parameters()},
    ]
    torch = _torch_or_none()
    if torch is not None:
        mappings.append({name: torch.tensor(value, requires_grad=True) for name, value in expected.items()})
    for mapping in mappings:
        target.load_state_dict({name: np.zeros_like(value) for name, value in expected.items()})
        assert target.load_state_dict(mapping) == nn.LoadResult([], [])
        for name, parameter in target.named_parameters():
            assert parameter.dtype == np.float64, "values are cast to the parameter's dtype"
            assert parameter.requires_grad and parameter.is_leaf
            np.testing.assert_array_equal(parameter.numpy(), expected[name].astype(np.float64))


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def test_load_state_dict_copies_its_input():
    model = nn.Linear(2, 2)
    mapping = {"weight": np.ones((2, 2), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)}
    model.load_state_dict(mapping)
    mapping["weight"][:] = 7.0
    np.testing.assert_array_equal(model.weight.numpy(), np.ones((2, 2)))


def test_loaded_model_computes_like_the_source():
    source, target = Model(num_layers=2), Model(num_layers=2)
    target.load_state_dict(source.state_dict())
    x = tl.randn(5, 2, 3)
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())


def test_strict_load_rejects_a_missing_key_and_changes_nothing():
    model = Model()
    before = _snapshot(model)
    mapping = {name: value + 1 for name, value in model.state_dict().items()}
    del mapping["rnn.bias_hh_l0"]
    with pytest.raises(KeyError, match=r"missing keys: rnn\.bias_hh_l0"):
        model.load_state_dict(mapping)
    _assert_unchanged(model, before)


def test_strict_load_rejects_an_unexpected_key_and_changes_nothing():
    model = Model()
    before = _snapshot(model)
    mapping = {name: value + 1 for name, value in model.state_dict().items()}
    mapping["head.scale"] = np.ones(1)
    with pytest.raises(KeyError, match=r"unexpected keys: head\.scale"):
        model.load_state_dict(mapping)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("strict", [True, False])
def test_load_rejects_a_wrong_shape_naming_the_key_and_both_shapes(strict):
    model = Model()
    before = _snapshot(model)
    # Entries before and after the bad one are valid: none of them may be applied.
    mapping = {name: value + 1 for name, value in model.state_dict().items()}
    mapping["rnn.weight_hh_l0"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"'rnn\.weight_hh_l0'.*\(16, 5\).*\(16, 4\)"):
        model.load_state_dict(mapping, strict=strict)
    _assert_unchanged(model, before)


def test_non_strict_load_reports_missing_and_unexpected_keys():
    model = Model()
    before = _snapshot(model)
    result = model.load_state_dict({"head.bias": np.full(2, 3.0), "decoder.weight": np.ones(1)}, strict=False)
    assert result.unexpected_keys == ["decoder.weight"]
    assert result.missing_keys == [name for name in before if name != "head.bias"]
    np.testing.assert_array_equal(model.head.bias.numpy(), [3.0, 3.0])
    before["head.bias"] = np.full(2, 3.0, dtype=np.float32)
    _assert_unchanged(model, before)


# ---------------------------------------------------------------- behaviour


def test_zero_grad_sets_every_gradient_to_none():
    model = Model()
    model(tl.randn(4, 2, 3)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_train_and_eval_reach_every_module_and_recurrent_cells():
    model = nn.Sequential(Model(num_layers=2, dropout=0.5), nn.Dropout(0.2))
    rnn = model[0].rnn
    every = [*model.modules(), *rnn.cells]
    assert all(module.training for module in every)
    assert model.eval() is model
    assert not any(module.training for module in every)
    model.train()
    assert all(module.training for module in every)
    model.train(False)
    assert not any(module.training for module in every)


def test_eval_turns_dropout_between_recurrent_layers_off():
    tl.manual_seed(0)
    model = Model(num_layers=2, dropout=0.5)
    x = tl.randn(5, 2, 3)
    model.eval()
    first = model(x).numpy()
    np.testing.assert_array_equal(model(x).numpy(), first)
    model.train()
    assert not np.allclose(model(x).numpy(), first)


def test_to_cpu_and_astype():
    model = Model()
    model(tl.randn(3, 2, 3)).sum().backward()
    assert model.to("cpu") is model
    assert all(p.device == "cpu" and p.grad is not None for p in model.parameters())
    state = model.state_dict()
    assert model.astype(tl.float64) is model
    for name, parameter in model.named_parameters():
        assert parameter.dtype == np.float64 and parameter.grad is None and parameter.requires_grad
        np.testing.assert_array_equal(parameter.numpy(), state[name].astype(np.float64))
    assert model(tl.randn(3, 2, 3, dtype=tl.float64)).dtype == np.float64
    assert all(cell.weight_ih is model.rnn.weight_ih_l0 for cell in model.rnn.cells[:1])
    assert model.rnn.cells[0].weight_ih.dtype == np.float64  # the cells share the cast weights
    model.astype("float32")
    assert all(p.dtype == np.float32 for p in model.parameters())
    with pytest.raises(TypeError, match="not a dtype"):
        model.astype(object())


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="Empty must define forward"):

        class Empty(nn.Module):
            pass

        Empty()(1)


def test_repr_is_readable():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.25), Model(num_layers=2))
    text = repr(model)
    assert text == (
        "Sequential(\n"
        "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (1): Dropout(p=0.25)\n"
        "  (2): Model(\n"
        "    (rnn): LSTM(3, 4, num_layers=2)\n"
        "    (head): Linear(in_features=4, out_features=2, bias=True)\n"
        "  )\n"
        ")"
    )
    assert repr(nn.GRU(2, 3, bidirectional=True, batch_first=True, dropout=0.1)) == (
        "GRU(2, 3, bidirectional=True, batch_first=True, dropout=0.1)"
    )
    assert repr(nn.Embedding(10, 3)) == "Embedding(10, 3)"
    assert repr(nn.LSTMCell(2, 3)) == "LSTMCell(2, 3)"
    assert repr(nn.Parameter(tl.zeros(2))).startswith("Parameter containing:\nTensor(")


def test_assigning_a_new_parameter_to_a_recurrent_layer_reaches_the_cell_that_uses_it():
    layer = nn.LSTM(2, 3, bidirectional=True).astype(tl.float64)
    x = tl.Tensor(np.random.default_rng(0).normal(size=(4, 1, 2)))
    layer.weight_hh_l0_reverse = nn.Parameter(tl.zeros(12, 3, dtype=tl.float64))
    output, _ = layer(x)
    output.sum().backward()
    assert layer.weight_hh_l0_reverse.grad is not None  # the new parameter is in the graph
    assert dict(layer.named_parameters())["weight_hh_l0_reverse"] is layer.weight_hh_l0_reverse
    with pytest.raises(TypeError, match="weight_hh_l0 must stay an nn.Parameter"):
        layer.weight_hh_l0 = tl.zeros(12, 3)
