"""tinygrad-lstm: the adding-problem demo, a character-level language model, the gradient checks.

    tinygrad-lstm demo        LSTM vs tanh RNN on the adding problem (T = 100): a table,
                              losses.png, gradient_flow.png and results.json
    tinygrad-lstm charlm      a character-level LSTM on a text file or on the docstrings
                              of Python's standard library; checkpoints, --resume, samples
    tinygrad-lstm gradcheck   every op, cell and layer against finite differences

``python -m tinygrad_lstm`` is the same command. This module is the only place that
prints progress or draws plots: ``demo``, ``charlm`` and ``battery`` compute and return
data. Progress bars need tqdm, plots matplotlib and the BLAS thread setting threadpoolctl:
``pip install 'tinygrad_lstm[cli]'``.

BLAS threads are chosen, not left to the library: ``--threads`` (default 1). These models
multiply small matrices (hidden 32 to 128), where a BLAS thread pool spends more time
waking and synchronising its threads than computing; one thread is faster, and steady on a
shared machine (a short demo run: see README, "The two commands").
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .apps.charlm import CharLMConfig
from .apps.demo import DemoConfig
from .tensor import DeviceError, get_default_device, set_default_device

EXIT_FAILED = 1  # a check failed, or a dependency is missing
EXIT_BAD_INPUT = 2  # bad arguments, missing or corrupt files (argparse uses 2 as well)


class CommandError(Exception):
    """A one-line error for the user (no traceback); ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def _optional(module: str, purpose: str) -> Any:
    """Import an optional dependency of the command line, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CommandError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed; "
            "install the command-line extra: pip install 'tinygrad_lstm[cli]'",
            EXIT_FAILED,
        ) from None


def _progress(total: int, description: str, initial: int = 0, unit: str = "step") -> Any:
    """A tqdm bar on stderr when it is a terminal; otherwise (a log file, CI) ``LineProgress``."""
    tqdm = _optional("tqdm", "showing progress bars").tqdm
    if not sys.stderr.isatty():
        return LineProgress(total, description, initial, unit)
    return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True)


class LineProgress:
    """Progress as log lines on stderr, for runs whose stderr is not a terminal.

    A line each time another tenth of the work is done (and at the end), with the rate
    and the time left at that rate: ``charlm: 250/2500 steps (10%), 0.31 s/step, about
    11.6 min left, loss=1.93``. Same calls as the tqdm bar it stands in for.
    """

    def __init__(self, total: int, description: str, initial: int = 0, unit: str = "step"):
        self.total, self.description, self.unit = total, description.strip(), unit
        self.done = self.first = initial
        self.start = time.perf_counter()
        self.postfix = ""
        self.next_line = self._next_tenth(initial)

    def _next_tenth(self, done: int) -> int:
        tenth = max(1, self.total // 10)
        return (done // tenth + 1) * tenth

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.done >= self.next_line or self.done == self.total:
            self.next_line = self._next_tenth(self.done)
            self.log()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def log(self) -> None:
        elapsed, run = time.perf_counter() - self.start, self.done - self.first
        line = f"{self.description}: {self.done}/{self.total} {self.unit}s ({self.done / max(self.total, 1):.0%})"
        if run:
            line += f", {elapsed / run:.3g} s/{self.unit}"
            if self.done < self.total:
                line += f", about {_seconds(elapsed / run * (self.total - self.done))} left"
        print(line + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def blas_threads(threads: int):
    """Run the block with ``threads`` BLAS threads (0: the BLAS library's own default)."""
    if threads == 0:
        yield
        return
    threadpoolctl = _optional("threadpoolctl", "choosing the number of BLAS threads")
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        yield


@contextlib.contextmanager
def stop_between_steps():
    """Ctrl-C during the block asks for a stop instead of raising mid-step.

    Yields a one-element list that turns ``[True]`` at the first Ctrl-C; the loop checks
    it after each step, so what it saves is a whole step. A second Ctrl-C interrupts at
    once (Python's default again).
    """
    requested = [False]

    def request_stop(signum: int, frame: Any) -> None:
        requested[0] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nstopping after this step and saving (Ctrl-C again to quit now)", file=sys.stderr, flush=True)

    try:
        previous = signal.signal(signal.SIGINT, request_stop)
    except ValueError:  # not the main thread: signals stay as they are
        yield requested
        return
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


class _StopRequested(Exception):
    """Raised from a step callback to leave the training loop between two steps."""


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


# --------------------------------------------------------------------------- demo


def plot_losses(results: dict[str, Any], path: Path) -> None:
    """Both training curves (raw and a moving average) against the constant-prediction baseline."""
    figure_module = _optional("matplotlib.figure", "drawing the plots")
    figure = figure_module.Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    colors = {"lstm": "tab:blue", "rnn": "tab:orange"}
    for kind, model in results["models"].items():
        losses = np.asarray(model["losses"])
        steps = np.arange(1, len(losses) + 1)
        window = max(1, min(50, len(losses) // 10))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(steps, losses, color=colors.get(kind), alpha=0.2, linewidth=0.6)
        label = f"{model['model']} (test MSE {model['test_mse']:.4f})"
        axes.plot(steps[window - 1 :], smooth, color=colors.get(kind), linewidth=1.8, label=label)
    baseline = results["baseline_mse"]
    axes.axhline(baseline, color="black", linestyle="--", linewidth=1, label=f"always predict 1.0 (MSE {baseline:.3f})")
    axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("training MSE (batch)")
    config = results["config"]
    axes.set_title(
        f"Adding problem, T = {config['seq_len']}: {config['steps']} steps of {config['batch_size']} "
        f"fresh sequences, hidden {config['hidden_size']}"
    )
    axes.legend(loc="lower left")
    axes.grid(True, which="major", alpha=0.3)
    figure.savefig(path, dpi=120, metadata=_picture_metadata(results))


def _picture_metadata(results: dict[str, Any]) -> dict[str, str]:
    """PNG text: which run drew this picture (checked by tests/test_demo_figures.py)."""
    return {"Description": f"tinygrad-lstm demo run {results['run_id']}"}


def plot_gradient_flow(results: dict[str, Any], path: Path) -> None:
    """‖∂loss/∂x_t‖ against the distance from the end, at initialisation and after training."""
    figure_module = _optional("matplotlib.figure", "drawing the plots")
    figure = figure_module.Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    colors = {"lstm": "tab:blue", "rnn": "tab:orange"}
    floor = 1e-30  # smaller values (down to float32 underflow, 0) drawn at the floor, not dropped
    lowest = math.inf
    for kind, model in results["models"].items():
        for key, style, when in (
            ("gradient_flow_initial", "--", "at initialisation"),
            ("gradient_flow_trained", "-", "after training"),
        ):
            raw = np.asarray(model[key])
            norms = np.maximum(raw, floor)
            lowest = min(lowest, float(norms.min()))
            label = f"{model['model']}, {when}" + (
                f" (below {floor:g}: drawn at {floor:g})" if (raw < floor).any() else ""
            )
            axes.plot(np.arange(len(norms)), norms, linestyle=style, color=colors.get(kind), label=label)
    axes.set_yscale("log")
    axes.set_ylim(bottom=lowest / 10 if lowest > floor else floor / 10)
    axes.set_xlabel("distance from the end of the sequence, T - 1 - t  (steps)")
    axes.set_ylabel("‖∂loss/∂x_t‖  (test batch)")
    axes.set_title("How much of the loss's gradient reaches input x_t")
    axes.legend(loc="lower left", fontsize=9)
    axes.grid(True, which="major", alpha=0.3)
    figure.savefig(path, dpi=120, metadata=_picture_metadata(results))


def demo_table(results: dict[str, Any]) -> str:
    """The results table as text."""
    rows = [f"{'model':<10} {'test MSE':>9} {'|err| < 0.04':>13} {'|err| < 0.08':>13} {'wall time':>10}"]
    for model in results["models"].values():
        rows.append(
            f"{model['model']:<10} {model['test_mse']:>9.5f} {model['within_0.04']:>12.1%} "
            f"{model['within_0.08']:>12.1%} {_seconds(model['train_seconds']):>10}"
        )
    rows.append(
        f"(always predicting 1.0 scores {results['baseline_mse']:.3f} in expectation, "
        f"{results['test_constant_prediction_mse']:.4f} on this test set)"
    )
    return "\n".join(rows)


def command_demo(args: argparse.Namespace) -> int:
    from .apps.demo import MODEL_KINDS, MODEL_LABELS, run_demo, run_id

    for name in ("seq_len", "hidden", "steps", "batch", "test_size"):
        if getattr(args, name) < (2 if name == "seq_len" else 1):
            raise CommandError(f"--{name.replace('_', '-')} must be at least {2 if name == 'seq_len' else 1}")
    if args.lr <= 0 or args.clip <= 0:
        raise CommandError("--lr and --clip must be positive")
    _optional("matplotlib.figure", "drawing the plots")  # fail before training, not after
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the output folder {out}: {error.strerror}") from None
    config = DemoConfig(
        seq_len=args.seq_len,
        hidden_size=args.hidden,
        batch_size=args.batch,
        steps=args.steps,
        lr=args.lr,
        clip=args.clip,
        test_size=args.test_size,
        seed=args.seed,
        device=get_default_device(),
    )
    print(
        f"adding problem: T = {config.seq_len}, hidden {config.hidden_size}, {config.steps} steps of "
        f"{config.batch_size} fresh sequences per model, Adam lr {config.lr:g}, clip {config.clip:g}, "
        f"test set {config.test_size}, device {config.device}, seed {config.seed}",
        flush=True,
    )
    bars: dict[str, Any] = {}

    def on_step(kind: str, step: int, loss: float) -> None:
        if kind not in bars:
            for bar in bars.values():
                bar.close()
            bars[kind] = _progress(config.steps, f"{MODEL_LABELS[kind]:<8}")
        bar = bars[kind]
        bar.update(1)
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(mse=f"{loss:.4f}", refresh=False)

    start = time.perf_counter()
    try:
        results = run_demo(config, on_step, kinds=MODEL_KINDS)
    finally:
        for bar in bars.values():
            bar.close()
    results["total_seconds"] = time.perf_counter() - start
    results["blas_threads"] = args.threads or "library default"
    results["run_id"] = run_id(results)
    plot_losses(results, out / "losses.png")
    plot_gradient_flow(results, out / "gradient_flow.png")
    results["files"] = ["losses.png", "gradient_flow.png", "results.json"]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(demo_table(results))
    written = ", ".join(str(out / name) for name in results["files"])
    print(f"total {_seconds(results['total_seconds'])}; wrote {written}")
    return 0


# ------------------------------------------------------------------------- charlm


def command_charlm(args: argparse.Namespace) -> int:
    from .apps import charlm

    numbers = {
        "steps": 0,
        "seq_len": 1,
        "batch": 1,
        "hidden": 1,
        "embedding": 1,
        "layers": 1,
        "sample": 0,
        "max_chars": 1,
    }
    for name, least in numbers.items():
        if getattr(args, name) < least:
            raise CommandError(f"--{name.replace('_', '-')} must be at least {least}")
    if args.temperature <= 0:
        raise CommandError(f"--temperature must be positive, got {args.temperature}")
    config = CharLMConfig(
        embedding_dim=args.embedding,
        hidden_size=args.hidden,
        num_layers=args.layers,
        seq_len=args.seq_len,
        batch_size=args.batch,
        steps=args.steps,
        lr=args.lr,
        clip=args.clip,
        seed=args.seed,
        device=get_default_device(),
    )
    tqdm = _optional("tqdm", "showing progress bars").tqdm
    try:
        if args.resume is not None:
            charlm.read_checkpoint(args.resume)  # a bad checkpoint fails before the corpus is built
        corpus_bar = None

        def on_file(done: int, total: int) -> None:
            nonlocal corpus_bar
            if corpus_bar is None:
                corpus_bar = _progress(total, "reading stdlib docstrings", unit="file")
            corpus_bar.update(1)

        try:
            text = charlm.read_text(args.text, max_chars=args.max_chars, on_file=on_file)
        finally:
            if corpus_bar is not None:
                corpus_bar.close()
        if args.resume is not None:
            trainer = charlm.Trainer.resume(args.resume, text, config)
        else:
            trainer = charlm.Trainer(text, config)
    except charlm.BadInput as error:
        raise CommandError(str(error)) from None
    source = args.text if args.text is not None else "docstrings of Python's standard library"
    parameter_count = sum(p.size for p in trainer.parameters.values())
    print(
        f"charlm: {len(text):,} characters ({source}), vocabulary {len(trainer.vocab)}, LSTM "
        f"{config.num_layers}×{config.hidden_size}, {parameter_count:,} parameters, device {config.device}"
        + (f"; resumed at step {trainer.step}" if args.resume else ""),
        flush=True,
    )
    checkpoint = Path(args.checkpoint)
    try:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the checkpoint folder {checkpoint.parent}: {error.strerror}") from None
    rng = np.random.default_rng(args.seed)
    average = [math.nan]  # a running mean of the loss for the bar (nats/char)
    bar = _progress(config.steps, "charlm", initial=min(trainer.step, config.steps))

    def on_step(step: int, loss: float) -> None:
        average[0] = loss if math.isnan(average[0]) else 0.98 * average[0] + 0.02 * loss
        bar.update(1)
        if step % 10 == 0 or step == config.steps:
            bar.set_postfix(loss=f"{average[0]:.3f}", bpc=f"{average[0] / charlm.LN2:.3f}", refresh=False)
        if args.sample_every and step % args.sample_every == 0:
            sample = charlm.generate(
                trainer.model, trainer.vocab, 200, args.temperature, args.prime, rng, config.device
            )
            tqdm.write(f"--- step {step}, {average[0] / charlm.LN2:.2f} bits/char ---\n{sample}\n")
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            trainer.save(checkpoint)

    start, first_step = time.perf_counter(), trainer.step
    interrupted = False
    with stop_between_steps() as stop_requested:

        def on_step_or_stop(step: int, loss: float) -> None:
            on_step(step, loss)
            if stop_requested[0]:
                raise _StopRequested

        try:
            charlm.train(trainer, on_step_or_stop)
        except _StopRequested:
            interrupted = True
        finally:
            bar.close()
    seconds = time.perf_counter() - start
    trainer.save(checkpoint)
    steps_run = trainer.step - first_step
    if steps_run:
        print(
            f"trained {steps_run} steps in {_seconds(seconds)} ({1000 * seconds / steps_run:.0f} ms/step); "
            f"final {average[0] / charlm.LN2:.3f} bits/char (running mean)"
        )
    print(f"checkpoint: {checkpoint} (step {trainer.step}); continue with --resume {checkpoint}")
    if interrupted:
        print(f"interrupted at step {trainer.step} of {config.steps}", file=sys.stderr)
        return 130
    if args.sample:
        sample = charlm.generate(
            trainer.model, trainer.vocab, args.sample, args.temperature, args.prime, rng, config.device
        )
        print(f"--- sample, temperature {args.temperature:g} ---\n{args.prime}{sample}")
    return 0


# ---------------------------------------------------------------------- gradcheck


def command_gradcheck(args: argparse.Namespace) -> int:
    from .testing import battery

    checks = battery.battery_for(args.order)
    if args.filter:
        checks = [check for check in checks if args.filter.lower() in check.name.lower()]
        if not checks:
            raise CommandError(f"no check name contains {args.filter!r}; try --list")
    if args.list:
        for check in checks:
            print(f"{check.group:<16} {check.name}")
        return 0
    device = get_default_device()
    what = "gradient checks" if args.order == 1 else "second-derivative checks (gradgradcheck)"
    print(f"{what}: reverse mode against central differences, float64, device {device}", flush=True)
    bar = _progress(len(checks), "gradcheck", unit="check")
    start = time.perf_counter()
    try:
        results = battery.run_battery(
            device, checks, on_result=lambda result: bar.update(1), seed=args.seed, order=args.order
        )
    finally:
        bar.close()
    width = max(len(result.check.name) for result in results)
    print(f"{'check':<{width}}  {'group':<15} {'max abs error':>13} {'max rel error':>13}  result")
    for result in results:
        if result.report is None:
            errors = f"{'-':>13} {'-':>13}"
        else:
            errors = f"{result.report.max_abs_error:>13.2e} {result.report.max_rel_error:>13.2e}"
        print(f"{result.check.name:<{width}}  {result.check.group:<15} {errors}  {'pass' if result.passed else 'FAIL'}")
    failed = [result for result in results if not result.passed]
    for result in failed:
        print(f"\nFAILED {result.check.name}:\n{result.error or result.report}")
    missed = battery.primitives_missed(results, args.order) if not args.filter else []
    primitives = battery.all_primitives()
    print(
        f"\n{len(results) - len(failed)} of {len(results)} checks passed in {_seconds(time.perf_counter() - start)}"
        + ("" if args.filter else f"; primitives exercised: {len(primitives) - len(missed)} of {len(primitives)}")
    )
    if missed:
        print(f"FAILED coverage: no check exercises the primitive(s) {', '.join(missed)} (add one to battery.py)")
    return EXIT_FAILED if failed or missed else 0


# ------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--device", default=None, help="cpu (NumPy) or cuda (CuPy); default: $TINYGRAD_LSTM_DEVICE, else cpu"
    )
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads (default 1: fastest for these small matrices; 0: the BLAS library's default)",
    )

    parser = argparse.ArgumentParser(
        prog="tinygrad-lstm",
        description="A small reverse-mode autodiff engine with LSTMs: demos and checks.",
        epilog="Start with: tinygrad-lstm demo   (each command has --help)",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="LSTM vs tanh RNN on the adding problem",
        description="Train an LSTM and a tanh RNN (same hidden size, budget and optimizer) on the adding "
        "problem: T steps of (value ~ U(0,1), marker), two markers, target = the sum of the two marked "
        "values; always predicting 1.0 scores MSE 0.167. Prints a table and writes losses.png, "
        "gradient_flow.png and results.json to --out.",
    )
    d = DemoConfig()
    demo.add_argument("-T", "--seq-len", type=int, default=d.seq_len, help="sequence length T (default %(default)s)")
    demo.add_argument(
        "--hidden", type=int, default=d.hidden_size, help="hidden size of both models (default %(default)s)"
    )
    demo.add_argument("--steps", type=int, default=d.steps, help="training steps per model (default %(default)s)")
    demo.add_argument("--batch", type=int, default=d.batch_size, help="fresh sequences per step (default %(default)s)")
    demo.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    demo.add_argument(
        "--clip", type=float, default=d.clip, help="gradient-norm clipping threshold (default %(default)s)"
    )
    demo.add_argument("--test-size", type=int, default=d.test_size, help="fixed test sequences (default %(default)s)")
    demo.add_argument("--out", default="demo_output", help="output folder (default ./demo_output)")
    demo.set_defaults(handler=command_demo)

    lm = commands.add_parser(
        "charlm",
        parents=[common],
        help="a character-level LSTM language model",
        description="Train Embedding → LSTM → Linear on characters with truncated BPTT, gradient clipping "
        "and Adam; by default on the docstrings of Python's standard library (built at run time, offline). "
        "Saves checkpoints (tl.save .npz with the vocabulary; also on Ctrl-C, after the current step) "
        "and prints a generated sample. The default run, 2500 steps at 50-100 ms each, takes 2 to 4 "
        "minutes on 2 cores.",
    )
    lm.add_argument(
        "--text", default=None, metavar="FILE", help="UTF-8 text file to train on (default: stdlib docstrings)"
    )
    lm.add_argument("--max-chars", type=int, default=1_000_000, help="use at most this many characters (default 1e6)")
    c = CharLMConfig()
    lm.add_argument("--steps", type=int, default=c.steps, help="total training steps (default %(default)s)")
    lm.add_argument("--seq-len", type=int, default=c.seq_len, help="characters per BPTT chunk (default %(default)s)")
    lm.add_argument("--batch", type=int, default=c.batch_size, help="parallel text strips (default %(default)s)")
    lm.add_argument("--hidden", type=int, default=c.hidden_size, help="LSTM hidden size (default %(default)s)")
    lm.add_argument("--embedding", type=int, default=c.embedding_dim, help="embedding size (default %(default)s)")
    lm.add_argument("--layers", type=int, default=c.num_layers, help="LSTM layers (default %(default)s)")
    lm.add_argument("--lr", type=float, default=c.lr, help="Adam learning rate (default %(default)s)")
    lm.add_argument("--clip", type=float, default=c.clip, help="gradient-norm clipping threshold (default %(default)s)")
    lm.add_argument("--checkpoint", default="runs/charlm/checkpoint.npz", help="where to save (default %(default)s)")
    lm.add_argument(
        "--checkpoint-every", type=int, default=500, help="save every N steps (default 500; 0: only at the end)"
    )
    lm.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue from a checkpoint up to --steps")
    lm.add_argument("--sample-every", type=int, default=500, help="print a short sample every N steps (0: never)")
    lm.add_argument(
        "--sample", type=int, default=500, metavar="N", help="characters to generate at the end (default 500)"
    )
    lm.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    lm.add_argument("--prime", default="def ", help="text the samples start from (default 'def ')")
    lm.set_defaults(handler=command_charlm)

    check = commands.add_parser(
        "gradcheck",
        parents=[common],
        help="check every op, cell and layer against finite differences",
        description="Run the gradient-check battery (tinygrad_lstm/battery.py): every differentiable op, "
        "function, cell and layer, in float64, reverse mode against central differences. Exits 1 if any "
        "check fails or a primitive op has no check.",
    )
    check.add_argument("-k", "--filter", default=None, metavar="TEXT", help="run only checks whose name contains TEXT")
    check.add_argument("--list", action="store_true", help="list the checks and exit")
    check.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: gradients (default); 2: second derivatives, the VJP of the VJP (gradgradcheck)",
    )
    check.set_defaults(handler=command_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.device is not None:
            set_default_device(args.device)
        else:
            get_default_device()  # a bad $TINYGRAD_LSTM_DEVICE fails here, in one line
        if args.threads < 0:
            raise CommandError(f"--threads must be 0 (the BLAS default) or more, got {args.threads}")
        with blas_threads(args.threads):
            return args.handler(args)
    except DeviceError as error:
        message, code = str(error), EXIT_BAD_INPUT
    except CommandError as error:
        message, code = str(error), error.code
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    print(f"tinygrad-lstm {args.command}: error: {message}", file=sys.stderr)
    return code
