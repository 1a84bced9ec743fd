"""tl.save / tl.load: NumPy .npz archives only, and never an unpickle.

The hostile files carry a live payload: unpickling them creates a marker file. Each test
first shows the payload works (plain ``pickle.loads`` creates the marker), then that
``tl.load`` refuses the file with a clear error and the marker never appears.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinygrad_lstm as tl
from tinygrad_lstm import nn


class Payload:
    """Unpickling this opens (creates) ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 3)
        self.rnn = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens):
        output, _ = self.rnn(self.embed(tokens))
        return self.head(output)


@pytest.mark.parametrize("dtype", [tl.float32, tl.float64])
def test_a_saved_model_reloads_to_bit_identical_outputs(tmp_path, dtype):
    tl.manual_seed(0)
    model = Model().astype(dtype)
    path = tmp_path / "model.npz"
    tl.save(model, path)
    tl.manual_seed(1)
    restored = Model().astype(dtype)
    tokens = np.random.default_rng(0).integers(0, 7, size=(5, 2))
    assert not np.array_equal(restored(tokens).numpy(), model(tokens).numpy())
    assert restored.load_state_dict(tl.load(path)) == nn.LoadResult([], [])
    np.testing.assert_array_equal(restored(tokens).numpy(), model(tokens).numpy())
    for name, parameter in restored.named_parameters():
        assert parameter.dtype == dtype, name


def test_load_returns_plain_arrays_with_names_dtypes_and_values(tmp_path):
    state = {
        "weight": tl.Tensor([[1.5, -2.0]], dtype=tl.float64, requires_grad=True),
        "counts": np.arange(3, dtype=np.int32),
        "mask": np.array([True, False]),
        "scalar": np.float32(0.25),
    }
    path = tmp_path / "weights.bin"  # saved under exactly this name: no ".npz" appended
    tl.save(state, path)
    assert path.exists() and not (tmp_path / "weights.bin.npz").exists()
    loaded = tl.load(str(path))
    assert list(loaded) == list(state)
    for name, value in loaded.items():
        assert type(value) is np.ndarray, name
        expected = np.asarray(state[name])
        assert value.dtype == expected.dtype and value.shape == expected.shape, name
        np.testing.assert_array_equal(value, expected)


def test_save_refuses_what_only_pickle_could_store(tmp_path):
    with pytest.raises(TypeError, match=r"'config' has dtype object"):
        tl.save({"config": np.array([{"lr": 0.1}], dtype=object)}, tmp_path / "bad.npz")
    with pytest.raises(TypeError, match="Module or a dict of arrays"):
        tl.save([np.ones(2)], tmp_path / "bad.npz")


def test_load_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at"):
        tl.load(tmp_path / "nothing.npz")


def _assert_payload_is_live(marker: Path, data: bytes) -> None:
    """Control: unpickling ``data`` really does create the marker (then clean up)."""
    pickle.loads(data)
    assert marker.exists()
    marker.unlink()


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("weight = [1, 2, 3]\n")
    with pytest.raises(ValueError, match=r"is not a \.npz archive"):
        tl.load(path)


def test_a_npy_file_is_refused(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"is not a \.npz archive"):
        tl.load(path)


def test_a_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"weight": Payload(marker)})
    _assert_payload_is_live(marker, data)
    path = tmp_path / "model.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"is not a \.npz archive"):
        tl.load(path)
    assert not marker.exists()


def test_a_npy_holding_a_pickled_object_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.npy"
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"is not a \.npz archive"):
        tl.load(path)
    assert not marker.exists()


def test_a_npz_holding_a_pickled_object_array_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    np.savez(path, weight=np.ones(3), config=np.array([Payload(marker)], dtype=object))
    with np.load(path, allow_pickle=True) as archive:  # control: the payload is live
        archive["config"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match="holds pickled data, which is never loaded"):
        tl.load(path)
    assert not marker.exists()


def test_a_pickle_disguised_as_a_zip_is_refused_and_never_executed(tmp_path):
    """Pickle bytes followed by a real zip: zipfile.is_zipfile looks at the end and says
    yes, but NumPy reads the start and would unpickle — it must be refused."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(Payload(marker))
    _assert_payload_is_live(marker, data)
    archive = io.BytesIO()
    np.savez(archive, weight=np.ones(2))
    path = tmp_path / "model.npz"
    path.write_bytes(data + archive.getvalue())
    assert zipfile.is_zipfile(path)
    with pytest.raises(ValueError, match="pickled data"):
        tl.load(path)
    assert not marker.exists()


def test_a_zip_with_a_member_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weight.npy", b"not an array")
    with pytest.raises(ValueError, match=r"'weight' is not a \.npy member"):
        tl.load(path)
