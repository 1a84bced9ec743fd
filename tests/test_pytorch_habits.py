"""PyTorch habits, each checked against PyTorch's own numbers and errors where it is installed.

The namespace (tl.nn, tl.optim, tl.testing), tl.tensor(...) and t.size(), the dim=/keepdim=
spellings, in-place ops with their guards, module dtype moves, optimizer parameter groups,
AdamW and the schedulers, loss and activation modules, Sequential indexing.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_lstm as tl
from tinygrad_lstm import nn, optim

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def torch_in_float64():
    """PyTorch computes in float64 here, as our checks do; restored after each test (other files rely on float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def as_torch(tensor: tl.Tensor, requires_grad: bool = False):
    return torch.tensor(tensor.numpy(), requires_grad=requires_grad)


# ------------------------------------------------------------------- namespace


def test_subpackages_are_reachable_from_the_package_and_imported_lazily():
    code = (
        "import sys, tinygrad_lstm as tl\n"
        "assert 'tinygrad_lstm.nn' not in sys.modules and 'tinygrad_lstm.testing' not in sys.modules\n"
        "assert tl.nn.LSTM and tl.optim.AdamW and tl.optim.lr_scheduler.StepLR and tl.testing.gradcheck\n"
        "assert {'nn', 'optim', 'testing'} <= set(dir(tl))\n"
        "try:\n    tl.no_such_thing\nexcept AttributeError as error:\n    assert 'no_such_thing' in str(error)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tl_tensor_is_a_factory_and_still_the_engine_package():
    t = tl.tensor([1.0, 2.0])
    assert type(t) is tl.Tensor and t.dtype == tl.float32 and not t.requires_grad
    t = tl.tensor([[1, 2]], dtype=tl.double, requires_grad=True)
    assert t.dtype == tl.float64 and t.requires_grad and t.shape == (1, 2)
    assert tl.tensor([1, 2]).dtype == tl.long == torch.tensor([1, 2]).numpy().dtype
    assert tl.tensor.ops.Add is tl.ops.Add  # the subpackage is still there


def test_dtype_names():
    assert (tl.float, tl.double, tl.long) == (tl.float32, tl.float64, tl.int64)
    assert tl.Tensor([1.0], dtype=tl.double).dtype == np.float64


def test_size_is_numpys_count_and_pytorchs_shape_when_called():
    t = tl.zeros(2, 3, 4)
    reference = torch.zeros(2, 3, 4)
    assert t.size == 24 == reference.numel() and isinstance(t.size, int)
    assert t.size() == tuple(reference.size()) == t.shape
    assert [t.size(d) for d in (0, 1, 2, -1)] == [reference.size(d) for d in (0, 1, 2, -1)]
    assert t.dim() == reference.dim() == 3
    with pytest.raises(ValueError, match="out of range"):
        t.size(3)


# ------------------------------------------------------------------- spellings

REDUCTIONS = ["sum", "mean", "logsumexp"]


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    data=st.data(),
    name=st.sampled_from(REDUCTIONS),
    keepdim=st.booleans(),
)
def test_reductions_take_dim_and_keepdim_like_torch(shape, data, name, keepdim):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    values = np.random.default_rng(len(shape)).normal(size=shape)
    ours = getattr(tl.Tensor(values), name)(dim=dim, keepdim=keepdim)
    theirs = getattr(torch.tensor(values), name)(dim=dim, keepdim=keepdim)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    numpy_spelling = getattr(tl.Tensor(values), name)(axis=dim, keepdims=keepdim)
    np.testing.assert_array_equal(ours.numpy(), numpy_spelling.numpy())


def test_max_with_dim_is_torchs_values_and_indices_and_with_axis_numpys_values():
    values = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    ours, theirs = tl.Tensor(values), torch.tensor(values)
    maxima, indices = ours.max(dim=1)
    np.testing.assert_array_equal(maxima.numpy(), theirs.max(dim=1).values.numpy())
    np.testing.assert_array_equal(indices.numpy(), theirs.max(dim=1).indices.numpy())
    assert ours.max(dim=0, keepdim=True).values.shape == (1, 3)
    np.testing.assert_array_equal(ours.max(axis=1).numpy(), [5.0, 7.0])
    for name in ("argmax", "argmin"):
        for dim in (None, 0, 1, -1):
            ours_indices = getattr(ours, name)(dim=dim)
            np.testing.assert_array_equal(ours_indices.numpy(), getattr(theirs, name)(dim=dim).numpy())
            assert ours_indices.dtype == tl.int64
        assert getattr(ours, name)(dim=1, keepdim=True).shape == getattr(theirs, name)(dim=1, keepdim=True).shape


def test_softmax_permute_clone_cat_stack_split_chunk_unbind_squeeze_take_dim():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 3, 4))
    x, t = tl.Tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    checks = [
        (x.softmax(dim=1), t.softmax(dim=1)),
        (x.log_softmax(dim=-1), t.log_softmax(dim=-1)),
        (nn.functional.softmax(x, dim=0), torch.nn.functional.softmax(t, dim=0)),
        (nn.functional.log_softmax(x, dim=2), torch.nn.functional.log_softmax(t, dim=2)),
        (tl.softmax(x, dim=1), torch.softmax(t, dim=1)),
        (x.permute(2, 0, 1), t.permute(2, 0, 1)),
        (tl.permute(x, (1, 2, 0)), t.permute(1, 2, 0)),
        (x.clone() * 2.0, t.clone() * 2.0),
        (tl.cat([x, x], dim=1), torch.cat([t, t], dim=1)),
        (tl.stack([x, x], dim=-1), torch.stack([t, t], dim=-1)),
        (x.split(2, dim=2)[1], t.split(2, dim=2)[1]),
        (x.chunk(2, dim=1)[0], t.chunk(2, dim=1)[0]),
        (x.unbind(dim=1)[2], t.unbind(dim=1)[2]),
        (x[:, :1].squeeze(dim=1), t[:, :1].squeeze(dim=1)),
        (x.unsqueeze(dim=1), t.unsqueeze(dim=1)),
    ]
    for ours, theirs in checks:
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
    weights = rng.normal(size=(len(checks),))
    sum(w * (ours * ours).sum() for w, (ours, _) in zip(weights, checks)).backward()
    sum(w * (theirs * theirs).sum() for w, (_, theirs) in zip(weights, checks)).backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-10)


def test_clone_has_its_own_array_and_passes_the_gradient():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    copy = x.clone()
    assert copy.data is not x.data and not np.shares_memory(copy.data, x.data)
    (copy * 3.0).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_both_spellings_at_once_is_an_error():
    x = tl.ones(2, 3)
    with pytest.raises(TypeError, match="both axis=1 and dim=0"):
        x.sum(1, dim=0)
    with pytest.raises(TypeError, match="both keepdims= and keepdim="):
        x.mean(keepdims=True, keepdim=True)
    with pytest.raises(TypeError, match="both axis"):
        tl.cat([x, x], 1, dim=0)


# -------------------------------------------------------------------- in place


def test_a_hand_written_sgd_loop_matches_torch_and_keeps_the_parameters():
    rng = np.random.default_rng(0)
    tl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    reference = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    reference.load_state_dict({name: torch.tensor(value) for name, value in model.state_dict().items()})
    parameters = list(model.parameters())
    optimizer = optim.SGD(model.parameters(), lr=0.0)  # built before: must keep seeing the same objects
    names = list(model.state_dict())
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    for _ in range(5):
        loss = nn.MSELoss()(model(tl.Tensor(x)), tl.Tensor(y))
        model.zero_grad()
        loss.backward()
        with tl.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
            model[0].weight *= 0.99  # the attribute form: Python assigns the same Parameter back
        reference_loss = torch.nn.functional.mse_loss(reference(torch.tensor(x)), torch.tensor(y))
        reference.zero_grad()
        reference_loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.1 * p.grad
            reference[0].weight *= 0.99
        assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-12)
    assert list(model.parameters()) == parameters and optimizer.params == parameters
    assert list(model.state_dict()) == names
    assert all(isinstance(p, nn.Parameter) and p.is_leaf and p.requires_grad for p in model.parameters())
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, reference.state_dict()[name].numpy(), rtol=1e-12)
    assert model[0].weight._version == 10  # five steps of -= and *=


def _guard_outcome(framework, scenario):
    """Run ``scenario`` with one framework's tensor maker; 'raises' or the resulting gradient."""
    try:
        return scenario(framework)
    except (RuntimeError, TypeError, ValueError):
        return "raises"


class _Torch:
    no_grad = staticmethod(torch.no_grad)

    @staticmethod
    def leaf(values, requires_grad=True):
        return torch.tensor(values, requires_grad=requires_grad)


class _Ours:
    no_grad = staticmethod(tl.no_grad)

    @staticmethod
    def leaf(values, requires_grad=True):
        return tl.Tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def _leaf_in_grad_mode(f):
    w = f.leaf([1.0, 2.0])
    w += 1.0
    return "no error"


def _leaf_under_no_grad(f):
    w = f.leaf([1.0, 2.0])
    with f.no_grad():
        w *= 3.0
        w -= 1.0
    (w * w).sum().backward()
    return w.grad.numpy().tolist(), w.is_leaf, w.requires_grad


def _saved_input_changed(f):
    w, x = f.leaf([1.0, 2.0]), f.leaf([3.0, 4.0], requires_grad=False)
    y = w * x  # saves x for w's gradient
    x += 1.0
    y.sum().backward()
    return w.grad.numpy().tolist()


def _saved_output_changed(f):
    w = f.leaf([0.5, 1.0])
    y = w.exp()  # saves its output
    with f.no_grad():
        y /= 2.0
    y.sum().backward()
    return w.grad.numpy().tolist()


def _saved_leaf_changed_by_no_grad_update(f):
    w, v = f.leaf([1.0, 2.0]), f.leaf([3.0, 4.0])
    y = (w * v).tanh()  # saves w (for v's gradient) and v (for w's)
    with f.no_grad():
        w -= 0.5
    y.sum().backward()
    return w.grad.numpy().tolist()


def _non_leaf_recorded(f):
    w, x = f.leaf([1.0, 2.0]), f.leaf([3.0, 4.0], requires_grad=False)
    h = w * 2.0
    h += x
    h *= w
    h -= 1.0
    h /= x
    h.sum().backward()
    return w.grad.numpy().tolist()


def _plain_tensor_takes_a_gradient(f):
    w = f.leaf([1.0, 2.0])
    z = f.leaf([0.0, 0.0], requires_grad=False)
    z += w * w  # z now depends on w
    (z * 3.0).sum().backward()
    return w.grad.numpy().tolist(), z.is_leaf


def _zero_and_copy_recorded(f):
    w, v = f.leaf([1.0, 2.0]), f.leaf([5.0, 6.0])
    h = w * 3.0
    g = w * 1.0
    g.zero_()
    h.copy_(v * v)
    (h * w + g).sum().backward()
    return w.grad.numpy().tolist(), v.grad.numpy().tolist()


def _wrong_dtype(f):
    t = f.leaf([1.0, 2.0], requires_grad=False)
    indices = t.long() if hasattr(t, "long") else t.astype(tl.int64)
    indices += 1.5
    return "no error"


def _wrong_shape(f):
    t = f.leaf([1.0, 2.0], requires_grad=False)
    t += f.leaf([[1.0, 2.0], [3.0, 4.0]], requires_grad=False)
    return "no error"


def _zero_and_copy_under_no_grad(f):
    w = f.leaf([1.0, 2.0])
    with f.no_grad():
        w.zero_()
        w.copy_(f.leaf([7.0, 8.0], requires_grad=False) * 2.0)
    return w.detach().numpy().tolist()


GUARDS = [
    _leaf_in_grad_mode,
    _leaf_under_no_grad,
    _saved_input_changed,
    _saved_output_changed,
    _saved_leaf_changed_by_no_grad_update,
    _non_leaf_recorded,
    _plain_tensor_takes_a_gradient,
    _zero_and_copy_recorded,
    _wrong_dtype,
    _wrong_shape,
    _zero_and_copy_under_no_grad,
]


@pytest.mark.parametrize("scenario", GUARDS, ids=[scenario.__name__.strip("_") for scenario in GUARDS])
def test_in_place_guards_and_gradients_match_torch(scenario):
    ours, theirs = _guard_outcome(_Ours, scenario), _guard_outcome(_Torch, scenario)
    assert ours == theirs


def test_in_place_errors_name_the_problem():
    w = nn.Parameter(tl.Tensor([1.0]))
    with pytest.raises(RuntimeError, match=r"in-place \+= on a leaf tensor that requires grad.*no_grad"):
        w += 1.0
    x = tl.Tensor([1.0, 2.0])
    y = nn.Parameter(tl.Tensor([1.0, 1.0])) * x
    x.zero_()
    with pytest.raises(RuntimeError, match=r"the Mul op saved for backward .* changed in place"):
        y.sum().backward()
    with pytest.raises(ValueError, match=r"result has shape \(2, 2\), the tensor \(2,\)"):
        x += tl.ones(2, 2)
    with pytest.raises(TypeError, match="float64, which cannot be stored in this int64 tensor"):
        indices = tl.Tensor([1, 2])
        indices /= 2
    expanded = tl.Tensor([1.0]).expand(3)
    with pytest.raises(ValueError, match="expanded tensor .*clone"):
        expanded += 1.0
    with pytest.raises(ValueError, match=r"source of shape \(3,\) does not broadcast to \(2,\)"):
        x.copy_(tl.ones(3))


def test_changing_a_tensor_before_its_use_or_after_backward_is_fine():
    w, x = nn.Parameter(tl.Tensor([1.0, 2.0])), tl.Tensor([3.0, 4.0])
    x += 1.0  # before the op: nothing saved yet
    y = (w * x).sum()
    y.backward()
    x += 1.0  # after backward: nothing left to use it
    assert w.grad.tolist() == [4.0, 5.0]


def test_a_retained_graph_refuses_a_second_backward_after_an_optimizer_step():
    w = nn.Parameter(tl.Tensor([1.0, 2.0]))
    y = (w * w).sum()
    y.backward(retain_graph=True)
    optim.SGD([w], lr=0.1).step()  # updates w in place
    with pytest.raises(RuntimeError, match="optimizer step"):
        y.backward()


# ---------------------------------------------------------------- modules


def test_module_to_double_float_match_torch():
    tl.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1))
    assert model.to(tl.float64) is model and all(p.dtype == tl.float64 for p in model.parameters())
    model.float()
    assert all(p.dtype == tl.float32 for p in model.parameters())
    model.double()
    assert all(p.dtype == tl.float64 for p in model.parameters())
    model.to("cpu", tl.float32)
    assert all(p.dtype == tl.float32 and p.device == "cpu" for p in model.parameters())
    model.to(dtype="float64", device="cpu")
    assert all(p.dtype == tl.float64 for p in model.parameters())
    with pytest.raises(TypeError, match="neither a device .* nor a dtype"):
        model.to("gpu0")
    with pytest.raises(TypeError, match="got two dtypes"):
        model.to(tl.float32, tl.float64)
    x = tl.Tensor([1.0, 2.0])
    assert x.to(tl.float64).dtype == tl.float64 and x.to("cpu") is x


def test_activation_and_loss_modules_match_torch():
    rng = np.random.default_rng(1)
    tl.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3), nn.Sigmoid())
    model.double()
    reference = torch.nn.Sequential(
        torch.nn.Linear(4, 6),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 3),
        torch.nn.Sigmoid(),
    )
    reference.load_state_dict({name: torch.tensor(value) for name, value in model.state_dict().items()})
    x, targets, labels = rng.normal(size=(10, 4)), rng.normal(size=(10, 3)), rng.integers(0, 3, size=10)
    ours = nn.MSELoss()(model(tl.Tensor(x)), tl.Tensor(targets)) + nn.CrossEntropyLoss()(model(tl.Tensor(x)), labels)
    theirs = torch.nn.MSELoss()(reference(torch.tensor(x)), torch.tensor(targets)) + torch.nn.CrossEntropyLoss()(
        reference(torch.tensor(x)), torch.tensor(labels)
    )
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    ours.backward()
    theirs.backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, err_msg=name)
    assert "reduction='mean'" in repr(nn.MSELoss())
    with pytest.raises(ValueError, match="only reduction='mean'"):
        nn.CrossEntropyLoss(reduction="sum")


def test_sequential_indexes_and_slices_as_torch():
    layers = [nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)]
    model = nn.Sequential(*layers)
    assert model[0] is layers[0] and model[-1] is layers[2] and len(model) == 3
    tail = model[1:]
    assert isinstance(tail, nn.Sequential) and len(tail) == 2 and tail[1] is layers[2]
    assert [name for name, _ in tail.named_parameters()] == ["1.weight", "1.bias"]
    x = tl.randn(4, 3)
    np.testing.assert_array_equal(tail(x).numpy(), layers[2](layers[1](x)).numpy())
    with pytest.raises(IndexError, match="index 3 is out of range for a Sequential of 3 modules"):
        model[3]
    with pytest.raises(TypeError, match="indices must be integers"):
        model["0"]


# ------------------------------------------------------------------ optim


@pytest.mark.parametrize(
    ("ours_scheduler", "torch_scheduler"),
    [
        (lambda o: optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), "StepLR(o, step_size=3, gamma=0.5)"),
        (lambda o: optim.lr_scheduler.ExponentialLR(o, gamma=0.8), "ExponentialLR(o, gamma=0.8)"),
        (lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=4), "CosineAnnealingLR(o, T_max=4)"),
        (
            lambda o: optim.lr_scheduler.CosineAnnealingLR(o, T_max=3, eta_min=1e-3),
            "CosineAnnealingLR(o, T_max=3, eta_min=1e-3)",
        ),
    ],
    ids=["step", "exponential", "cosine", "cosine-eta-min"],
)
def test_adamw_with_two_param_groups_and_a_scheduler_matches_torch(ours_scheduler, torch_scheduler):
    rng = np.random.default_rng(2)
    weight, bias, x = rng.normal(size=(3, 4)), rng.normal(size=(3,)), rng.normal(size=(6, 4))
    w, b = nn.Parameter(tl.Tensor(weight)), nn.Parameter(tl.Tensor(bias))
    tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
    ours = optim.AdamW([{"params": [w]}, {"params": [b], "lr": 0.05, "weight_decay": 0.0}], lr=0.02, weight_decay=0.1)
    theirs = torch.optim.AdamW(
        [{"params": [tw]}, {"params": [tb], "lr": 0.05, "weight_decay": 0.0}], lr=0.02, weight_decay=0.1
    )
    scheduler = ours_scheduler(ours)
    reference_scheduler = eval(f"torch.optim.lr_scheduler.{torch_scheduler}", {"torch": torch, "o": theirs})
    for _ in range(12):
        ours.zero_grad()
        theirs.zero_grad()
        ((tl.Tensor(x) @ w.T + b).tanh() ** 2).sum().backward()
        ((torch.tensor(x) @ tw.T + tb).tanh() ** 2).sum().backward()
        ours.step()
        theirs.step()
        scheduler.step()
        reference_scheduler.step()
        np.testing.assert_allclose(scheduler.get_last_lr(), reference_scheduler.get_last_lr(), rtol=1e-12)
        np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=1e-10, atol=1e-13)
    assert [group["lr"] for group in ours.param_groups] == scheduler.get_last_lr()
    assert ours.param_groups[1]["weight_decay"] == 0.0 and ours.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda g: optim.SGD(g, lr=0.1, momentum=0.9, weight_decay=0.01),
            lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        (
            lambda g: optim.Adam(g, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
            lambda g: torch.optim.Adam(g, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
        ),
    ],
    ids=["sgd", "adam"],
)
def test_param_group_options_override_the_defaults_as_in_torch(ours, theirs):
    rng = np.random.default_rng(3)
    values = [rng.normal(size=(2, 3)), rng.normal(size=(3,))]
    mine = [nn.Parameter(tl.Tensor(v)) for v in values]
    reference = [torch.tensor(v, requires_grad=True) for v in values]
    optimizer = ours([{"params": [mine[0]]}, {"params": [mine[1]], "lr": 0.03}])
    reference_optimizer = theirs([{"params": [reference[0]]}, {"params": [reference[1]], "lr": 0.03}])
    for step in range(6):
        for p, q in zip(mine, reference):
            gradient = rng.normal(size=p.shape)
            p.grad, q.grad = tl.Tensor(gradient), torch.tensor(gradient)
        if step == 3:  # changing a group's lr between steps takes effect, as in torch
            optimizer.param_groups[0]["lr"] = reference_optimizer.param_groups[0]["lr"] = 0.2
        optimizer.step()
        reference_optimizer.step()
    for p, q in zip(mine, reference):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-12)


def test_zero_grad_set_to_none_or_zeros():
    p = nn.Parameter(tl.Tensor([1.0, 2.0]))
    optimizer = optim.SGD([p], lr=0.1)
    p.grad = tl.Tensor([3.0, 4.0])
    held = p.grad
    optimizer.zero_grad(set_to_none=False)
    assert p.grad is held and p.grad.tolist() == [0.0, 0.0]
    optimizer.zero_grad()
    assert p.grad is None
    model = nn.Linear(2, 1)
    model(tl.ones(1, 2)).sum().backward()
    grad = model.weight.grad
    model.zero_grad(set_to_none=False)
    assert model.weight.grad is grad and grad.tolist() == [[0.0, 0.0]]
    model.zero_grad()
    assert model.weight.grad is None and model.bias.grad is None


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: optim.SGD([p], lr="0.1"), TypeError, "lr must be a number, got str '0.1'"),
        (lambda p: optim.Adam([p], lr=float("nan")), ValueError, r"learning rate \(lr\) must be finite .* got nan"),
        (lambda p: optim.AdamW([p], lr=float("inf")), ValueError, "got inf"),
        (lambda p: optim.SGD([p], lr=True), TypeError, "lr must be a number, got bool"),
        (lambda p: optim.SGD([p], lr=0.1, momentum=float("nan")), ValueError, "momentum"),
        (lambda p: optim.Adam([p], betas=0.9), TypeError, "betas must be a pair"),
        (lambda p: optim.Adam([p], betas=(0.9, float("nan"))), ValueError, "betas"),
        (lambda p: optim.SGD([{"params": [p], "lr": "fast"}], lr=0.1), TypeError, "lr must be a number"),
        (lambda p: optim.SGD([p * 2.0], lr=0.1), ValueError, "non-leaf tensor .* made by Mul"),
        (lambda p: optim.SGD(p, lr=0.1), TypeError, r"single Tensor of shape \(2,\).*\[t\]"),
        (lambda p: optim.SGD({"params": [p]}, lr=0.1), TypeError, "iterable of Parameters or of dicts"),
        (lambda p: optim.SGD([p, p], lr=0.1), ValueError, "appears twice"),
        (lambda p: optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1), ValueError, "already in another"),
        (lambda p: optim.SGD([{"params": [p]}, p], lr=0.1), TypeError, "mixes dicts"),
        (lambda p: optim.SGD([{"lr": 0.1}], lr=0.1), TypeError, "'params' entry"),
        (lambda p: optim.lr_scheduler.StepLR(optim.SGD([p], lr=0.1), step_size=0), ValueError, "step_size"),
        (lambda p: optim.lr_scheduler.ExponentialLR(optim.SGD([p], lr=0.1), gamma="x"), TypeError, "gamma"),
        (lambda p: optim.lr_scheduler.CosineAnnealingLR("opt", T_max=3), TypeError, "needs an optimizer"),
    ],
)
def test_bad_optimizer_arguments_raise_clearly(make, error, message):
    with pytest.raises(error, match=message):
        make(nn.Parameter(tl.Tensor([1.0, 2.0])))


@pytest.mark.parametrize(
    ("grad", "error", "message"),
    [
        (np.ones(2), TypeError, r"is a numpy.ndarray, not a Tensor; assign p.grad = tl.Tensor\(array\)"),
        (tl.ones(3), ValueError, r"shape \(2,\) has shape \(3,\)"),
        (tl.ones(1), ValueError, r"has shape \(1,\); a gradient must have the parameter's shape"),
        (tl.ones(2, 2), ValueError, r"has shape \(2, 2\)"),
    ],
    ids=["numpy", "longer", "broadcastable", "bigger"],
)
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.AdamW(ps)], ids=["sgd", "adamw"])
def test_a_bad_gradient_is_refused_before_anything_changes(grad, error, message, make):
    good, bad = nn.Parameter(tl.Tensor([1.0, 2.0])), nn.Parameter(tl.Tensor([3.0, 4.0]))
    good.grad, bad.grad = tl.Tensor([1.0, 1.0]), grad
    optimizer = make([{"params": [good]}, {"params": [bad]}])
    with pytest.raises(error, match=message):
        optimizer.step()
    assert good.tolist() == [1.0, 2.0] and bad.tolist() == [3.0, 4.0]  # nothing half-done
    assert optimizer.state == {}
