"""The command line: every subcommand at tiny settings, its files, and its error messages.

The demo test runs the same code as ``tinygrad-lstm demo`` at T = 50 with a smaller
budget; the full run (T = 100, 2000 steps per model) is measured by hand, not here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tqdm  # noqa: F401  (the cli extra; the test extra installs it too)

import tinygrad_lstm as tl
from tinygrad_lstm.cli import main
from tinygrad_lstm.testing import battery

ROOT = Path(__file__).resolve().parents[1]

# The differentiable ops of API.md, and the layers and cells of nn: the battery must name each.
API_OPS = (
    "+ - * / ** @ neg exp log tanh sigmoid relu sqrt abs maximum clip sum mean max logsumexp "
    "reshape transpose T expand squeeze unsqueeze getitem cat stack split chunk unbind where astype to Function"
).split()
API_FUNCTIONS = "softmax log_softmax cross_entropy mse_loss dropout".split()
API_MODULES = "Linear Embedding RNNCell LSTMCell GRUCell RNN LSTM GRU lengths".split()

ENGLISH = (
    "The quick brown fox jumps over the lazy dog. Return the value of self when the list is empty.\n"
    "A small engine computes the gradient of the loss with respect to every parameter.\n"
)


@pytest.fixture(autouse=True)
def _restore_engine_state():
    device = tl.get_default_device()
    yield
    tl.set_default_device(device)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("tinygrad-lstm ")
    for word in words:
        assert word in lines[0]


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["charlm"], ["gradcheck"]], ids=["main", "demo", "charlm", "gradcheck"]
)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tinygrad-lstm")
    if command:
        assert "--device" in out and "--seed" in out


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 0
    assert "demo" in out and "charlm" in out and "gradcheck" in out


def test_python_dash_m_and_unknown_device():
    process = subprocess.run(
        [sys.executable, "-m", "tinygrad_lstm", "gradcheck", "--device", "no-such-device", "-k", "tanh"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert_one_line_error(process.returncode, process.stderr, "no-such-device")


# ---------------------------------------------------------------------------- demo


def test_demo_small_budget_writes_table_plots_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "-T", "50", "--steps", "25", "--batch", "16", "--hidden", "8", "--test-size", "96"]
    code, stdout, _ = run(capsys, *argv, "--seed", "3", "--out", str(out))
    assert code == 0
    assert re.search(r"^LSTM\s+\d\.\d{5}\s+\d+\.\d%\s+\d+\.\d%", stdout, re.MULTILINE), stdout
    assert re.search(r"^tanh RNN\s+\d\.\d{5}", stdout, re.MULTILINE), stdout
    for name in ("losses.png", "gradient_flow.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["problem"] == "adding"
    assert results["config"]["seq_len"] == 50 and results["config"]["seed"] == 3
    assert results["baseline_mse"] == pytest.approx(1 / 6)
    assert set(results["models"]) == {"lstm", "rnn"}
    for model in results["models"].values():
        for key in ("test_mse", "within_0.04", "within_0.08", "train_seconds", "seconds_per_step", "parameters"):
            assert np.isfinite(model[key]), key
        assert 0 <= model["within_0.04"] <= model["within_0.08"] <= 1
        assert len(model["losses"]) == 25
        for key in ("gradient_flow_initial", "gradient_flow_trained"):
            assert len(model[key]) == 50 and all(value >= 0 for value in model[key])
        # at initialisation the gradient reaching x_t fades with the distance from the end
        flow = model["gradient_flow_initial"]
        assert flow[0] > flow[-1]
    from tinygrad_lstm.apps.demo import run_id

    assert results["run_id"] == run_id(results) and results["blas_threads"] == 1
    for name in ("losses.png", "gradient_flow.png"):  # each picture names the run that drew it
        assert f"tinygrad-lstm demo run {results['run_id']}".encode() in (out / name).read_bytes()


def test_demo_rejects_bad_numbers(capsys):
    code, _, err = run(capsys, "demo", "-T", "1")
    assert_one_line_error(code, err, "--seq-len")


def test_demo_without_matplotlib_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    code = main(["demo", "-T", "4", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "matplotlib" in err and "pip install 'tinygrad_lstm[cli]'" in err
    assert not (tmp_path / "results.json").exists()


# -------------------------------------------------------------------------- charlm

TINY = ["--seq-len", "8", "--batch", "4", "--hidden", "12", "--embedding", "6", "--sample", "40"]


def test_charlm_trains_saves_resumes_and_samples(tmp_path, capsys):
    text_file = tmp_path / "text.txt"
    text_file.write_text(ENGLISH * 8, encoding="utf-8")
    checkpoint = tmp_path / "runs" / "lm.npz"
    common = [*TINY, "--text", str(text_file), "--checkpoint", str(checkpoint)]
    code, out, _ = run(capsys, "charlm", *common, "--steps", "6", "--sample-every", "3", "--checkpoint-every", "3")
    assert code == 0
    assert "vocabulary" in out and "--- sample, temperature 0.8 ---" in out
    saved = tl.load(checkpoint)
    assert int(saved["step"]) == 6
    assert saved["vocab"].dtype.kind == "i"
    assert "".join(chr(c) for c in saved["vocab"]) == "".join(sorted(set(ENGLISH)))
    assert {"model.embedding.weight", "model.lstm.weight_ih_l0", "model.head.bias"} <= set(saved)
    assert any(name.startswith("adam.") and name.endswith(".m") for name in saved)

    code, out, _ = run(capsys, "charlm", *common, "--steps", "9", "--resume", str(checkpoint), "--hidden", "99")
    assert code == 0
    assert "resumed at step 6" in out
    resumed = tl.load(checkpoint)
    assert int(resumed["step"]) == 9
    assert resumed["model.lstm.weight_hh_l0"].shape == (4 * 12, 12)  # the checkpoint's sizes, not --hidden
    sample = out.split("--- sample, temperature 0.8 ---\n", 1)[1]
    assert len(sample.rstrip("\n")) >= len("def ") + 1
    assert set(sample[len("def ") :].rstrip("\n")) <= set(ENGLISH) | {"\n"}


def test_charlm_resume_continues_exactly(tmp_path):
    """3 steps + checkpoint + resume + 3 steps gives the same weights as 6 steps in one go."""
    from tinygrad_lstm.apps import charlm

    def config(steps):
        return charlm.CharLMConfig(embedding_dim=5, hidden_size=7, seq_len=6, batch_size=3, steps=steps, seed=1)

    text = ENGLISH * 4
    straight = charlm.Trainer(text, config(6))
    charlm.train(straight)

    first = charlm.Trainer(text, config(3))
    charlm.train(first)
    first.save(tmp_path / "half.npz")
    resumed = charlm.Trainer.resume(tmp_path / "half.npz", text, config(6))
    assert resumed.step == 3 and resumed.state is not None
    charlm.train(resumed)
    for name, parameter in straight.parameters.items():
        np.testing.assert_allclose(resumed.parameters[name].numpy(), parameter.numpy(), rtol=1e-6, atol=1e-7)


def test_charlm_default_corpus_is_stdlib_docstrings():
    from tinygrad_lstm.apps.charlm import stdlib_corpus

    text = stdlib_corpus(max_chars=20_000)
    assert len(text) == 20_000
    assert "def " in text and '"""' in text and " the " in text


def test_charlm_missing_text_file(tmp_path, capsys):
    code, _, err = run(capsys, "charlm", "--text", str(tmp_path / "nope.txt"))
    assert_one_line_error(code, err, "nope.txt")


def test_charlm_empty_text_file(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    code, _, err = run(capsys, "charlm", "--text", str(empty))
    assert_one_line_error(code, err, "empty")


@pytest.mark.parametrize("content", [b"this is not a zip archive", None], ids=["garbage", "other-npz"])
def test_charlm_corrupt_checkpoint(tmp_path, capsys, content):
    checkpoint = tmp_path / "bad.npz"
    if content is None:
        tl.save({"weights": np.zeros(3)}, checkpoint)  # a valid archive, but not a charlm checkpoint
    else:
        checkpoint.write_bytes(content)
    code, _, err = run(capsys, "charlm", "--resume", str(checkpoint), "--steps", "0")
    assert_one_line_error(code, err, "bad.npz")


def test_charlm_missing_checkpoint_and_short_text(tmp_path, capsys):
    code, _, err = run(capsys, "charlm", "--resume", str(tmp_path / "missing.npz"))
    assert_one_line_error(code, err, "missing.npz")
    short = tmp_path / "short.txt"
    short.write_text("hello", encoding="utf-8")
    code, _, err = run(capsys, "charlm", "--text", str(short))
    assert_one_line_error(code, err, "--batch")


# ----------------------------------------------------------------------- gradcheck


def test_battery_names_every_op_function_and_layer():
    covered = {name for check in battery.battery() for name in check.covers}
    missing = [name for name in (*API_OPS, *API_FUNCTIONS, *API_MODULES) if name not in covered]
    assert not missing, f"battery.py has no check for: {missing}"


def test_gradcheck_battery_passes_and_lists_every_check(capsys):
    code, out, _ = run(capsys, "gradcheck")
    assert code == 0, out
    for check in battery.battery():
        assert re.search(rf"^{re.escape(check.name)}\s+.*\s+pass$", out, re.MULTILINE), check.name
    primitives = len(battery.all_primitives())
    assert f"primitives exercised: {primitives} of {primitives}" in out


def test_gradcheck_reports_a_wrong_gradient(capsys, monkeypatch):
    """A broken VJP makes its check fail, the table say FAIL, and the exit status 1."""

    def wrong(ctx, g):
        return g  # should be g · (1 - y²)

    monkeypatch.setattr(tl.ops.Tanh, "backward", staticmethod(wrong))
    code, out, _ = run(capsys, "gradcheck", "-k", "tanh")
    assert code == 1
    assert re.search(r"^tanh\s+op\s+.*FAIL$", out, re.MULTILINE), out
    assert "FAILED tanh" in out and "finite differences give" in out


def test_gradcheck_filter_matches_nothing(capsys):
    code, _, err = run(capsys, "gradcheck", "-k", "no such check")
    assert_one_line_error(code, err, "--list")


# ------------------------------------------------------------ threads, logs, Ctrl-C


def test_blas_threads_are_chosen_by_the_cli(capsys, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    default = blas_threads()
    seen = []
    monkeypatch.setattr(battery, "battery", lambda: seen.append(blas_threads()) or [])  # runs inside the command
    assert main(["gradcheck", "--list"]) == 0
    assert main(["gradcheck", "--list", "--threads", "0"]) == 0
    assert seen[0] and all(count == 1 for count in seen[0])  # the default: one thread
    assert seen[1] == default  # 0: the BLAS library's own choice
    assert blas_threads() == default  # put back afterwards
    code, _, err = run(capsys, "gradcheck", "--threads", "-1")
    assert_one_line_error(code, err, "--threads")


def test_progress_is_logged_as_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    text_file = tmp_path / "text.txt"
    text_file.write_text(ENGLISH * 4, encoding="utf-8")
    argv = [*TINY, "--text", str(text_file), "--checkpoint", str(tmp_path / "lm.npz"), "--sample-every", "0"]
    code, _, err = run(capsys, "charlm", *argv, "--steps", "20")
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("charlm: ")]
    assert len(lines) == 10, err  # one line per tenth of the run
    assert re.match(r"charlm: 2/20 steps \(10%\), [\d.e-]+ s/step, about .* left", lines[0]), lines[0]
    assert lines[-1].startswith("charlm: 20/20 steps (100%)") and "left" not in lines[-1]


def test_charlm_saves_on_ctrl_c_after_the_current_step(tmp_path):
    import signal
    import time

    text_file = tmp_path / "text.txt"
    text_file.write_text(ENGLISH * 8, encoding="utf-8")
    checkpoint = tmp_path / "lm.npz"
    process = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_lstm", "charlm", *TINY, "--text", str(text_file), "--steps", "1000000"]
        + ["--checkpoint", str(checkpoint), "--checkpoint-every", "0", "--sample-every", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()  # the "charlm: ... characters" line: training has started
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopping after this step and saving" in stderr and "interrupted at step" in stderr
    step = int(tl.load(checkpoint)["step"])
    assert step > 0 and f"checkpoint: {checkpoint} (step {step})" in stdout
