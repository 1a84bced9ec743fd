"""What a user wrote is never ignored: every key round-trips through tl.save/tl.load, the
file is exactly the path given, and load_state_dict refuses what it cannot load faithfully
(naming the key) before it changes anything."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lstm as tl
from tinygrad_lstm import nn

# Keys: any text a zip member name can hold (no NUL, no lone surrogates), plus the names
# that collide with numpy.savez's own keywords or with the ".npy" member suffix.
keys = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12),
    st.sampled_from(["file", "allow_pickle", "args", "kwds", "a.npy", "a", ".npy", "", "x/y", "ß∂"]),
)
values = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.bool_, np.uint16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
)


@given(state=st.dictionaries(keys, values, max_size=6))
def test_every_key_and_value_round_trips(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("save") / "state.npz"
    tl.save(state, path)
    loaded = tl.load(path)
    assert set(loaded) == set(state)
    for name, value in state.items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape, name
        np.testing.assert_array_equal(loaded[name], value)


def test_savez_keyword_names_and_npy_suffixes_are_kept_apart(tmp_path):
    state = {"allow_pickle": np.ones(2), "file": np.zeros(3), "a": np.full(1, 1.0), "a.npy": np.full(1, 2.0)}
    tl.save(state, tmp_path / "m.npz")
    loaded = tl.load(tmp_path / "m.npz")
    assert sorted(loaded) == sorted(state)
    assert loaded["a"][0] == 1.0 and loaded["a.npy"][0] == 2.0


@pytest.mark.parametrize("name", ["m.pt", "model", "weights.npz", "dir.d/x.bin"])
def test_save_writes_exactly_the_path_given(tmp_path, name):
    os.makedirs(tmp_path / "dir.d", exist_ok=True)
    tl.save(nn.Linear(2, 3), tmp_path / name)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [name]
    assert sorted(tl.load(tmp_path / name)) == ["bias", "weight"]


@pytest.mark.parametrize("key, error", [(1, TypeError), (("a", 1), TypeError), ("a\0b", ValueError)])
def test_save_refuses_a_key_that_cannot_round_trip_before_writing(tmp_path, key, error):
    with pytest.raises(error, match="key"):
        tl.save({"fine": np.ones(1), key: np.ones(2)}, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


# ------------------------------------------------------------ load_state_dict

bad_values = st.sampled_from(
    [
        np.array([[None] * 3] * 4, dtype=object),
        None,
        "weights",
        np.array([["a"] * 3] * 4),
        [[1.0, 2.0, 3.0]] * 3 + [[1.0, 2.0]],  # ragged
        [[object()] * 3] * 4,
    ]
)


@given(bad=bad_values, which=st.sampled_from(["weight", "bias"]))
def test_a_value_that_is_not_numbers_is_refused_by_name_and_nothing_changes(bad, which):
    layer = nn.Linear(3, 4)
    before = layer.state_dict()
    mapping = {**before, which: bad}
    with pytest.raises((TypeError, ValueError), match=repr(which)):
        layer.load_state_dict(mapping)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
        assert np.isfinite(value).all()


@pytest.mark.parametrize("mapping", [None, 3, "weight", [("weight", np.zeros((4, 3)))], (1, 2)])
def test_something_that_is_not_a_mapping_is_refused_as_in_pytorch(mapping):
    with pytest.raises(TypeError, match="expected a mapping name -> array") as caught:
        nn.Linear(3, 4).load_state_dict(mapping)
    if isinstance(mapping, list):
        assert "dict(pairs)" in str(caught.value)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError):
        torch.nn.Linear(3, 4).load_state_dict(mapping)


@pytest.mark.parametrize("key", [0, 1.5, ("weight",), None])
def test_a_key_that_is_not_a_string_is_named(key):
    layer = nn.Linear(3, 4)
    with pytest.raises(TypeError, match=r"key .* is not a parameter name"):
        layer.load_state_dict({**layer.state_dict(), key: np.zeros(1)}, strict=False)


@given(
    drop=st.sets(st.sampled_from(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"])),
    extra=st.sets(st.sampled_from(["head.weight", "weight_ih_l1", "scale", "bias"])),
)
def test_missing_and_unexpected_keys_are_all_listed_in_a_runtime_error(drop, extra):
    layer = nn.LSTM(2, 3)
    mapping = {name: value for name, value in layer.state_dict().items() if name not in drop}
    mapping.update({name: np.zeros(1) for name in extra})
    if not drop and not extra:
        assert layer.load_state_dict(mapping) == nn.LoadResult([], [])
        return
    with pytest.raises(RuntimeError) as caught:
        layer.load_state_dict(mapping)
    assert isinstance(caught.value, KeyError)  # the older spelling still catches it
    message = str(caught.value)
    assert not message.startswith("'")  # a readable message, not KeyError's quoted repr
    for name in drop | extra:
        assert name in message
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.LSTM(2, 3).load_state_dict({k: torch.tensor(v) for k, v in mapping.items()})
    for name in drop | extra:
        assert name in str(theirs.value)  # PyTorch lists the same keys
