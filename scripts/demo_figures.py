"""The demo's figures in README.md and docs/: quoted from one run, refreshed by one command.

    python scripts/demo_figures.py --run         # run `tinygrad-lstm demo`, then refresh from it
    python scripts/demo_figures.py demo_output   # refresh from a finished run's output folder

A figure in a page is written ``<!--demo:KEY-->value<!--/demo-->`` (the comments do not
show on the rendered page); KEY is one of ``figures(results)``. Refreshing copies the run's
results.json to docs/demo_results.json and its two pictures to docs/images/, then rewrites
every quoted value in README.md and docs/*.md from that run. tests/test_demo_figures.py
checks that the quotes, the pictures (they carry the run's id) and docs/demo_results.json
agree and come from the documented command, so a figure that drifts from the run fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "demo_results.json"
PICTURES = ("losses.png", "gradient_flow.png")
IMAGES = ROOT / "docs" / "images"
QUOTE = re.compile(r"<!--demo:(?P<key>[\w.]+)-->(?P<value>.*?)<!--/demo-->")
BREAKTHROUGH_WINDOW = 50  # steps in the moving average of the training loss


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def breakthrough_step(losses: list[float], baseline: float) -> int | None:
    """The first step at which the moving average of the loss is below a tenth of the baseline,
    rounded to 50 (when the LSTM "finds the marked values"); None if it never is."""
    losses_array = np.asarray(losses)
    if len(losses_array) < BREAKTHROUGH_WINDOW:
        return None
    average = np.convolve(losses_array, np.ones(BREAKTHROUGH_WINDOW) / BREAKTHROUGH_WINDOW, mode="valid")
    below = np.flatnonzero(average < baseline / 10)
    return None if below.size == 0 else int(round((below[0] + BREAKTHROUGH_WINDOW) / 50) * 50)


def zero_beyond(flow: list[float]) -> int | None:
    """The distance from the end beyond which every gradient norm is exactly 0 (None: never)."""
    nonzero = np.flatnonzero(np.asarray(flow) != 0)
    if nonzero.size == 0:
        return 0
    last = int(nonzero[-1]) + 1
    return None if last == len(flow) else last


def figures(results: dict[str, Any]) -> dict[str, str]:
    """Every quotable figure of a run, as the pages write it."""
    values = {
        "baseline_mse": f"{results['baseline_mse']:.3f}",
        "total_time": _seconds(results["total_seconds"]),
        "seed": str(results["config"]["seed"]),
        "steps": str(results["config"]["steps"]),
        "run_id": results["run_id"],
    }
    for kind, model in results["models"].items():
        values[f"{kind}.test_mse"] = f"{model['test_mse']:.5f}"
        values[f"{kind}.within_0.04"] = f"{model['within_0.04']:.1%}"
        values[f"{kind}.within_0.08"] = f"{model['within_0.08']:.1%}"
        values[f"{kind}.train_time"] = _seconds(model["train_seconds"])
        step = breakthrough_step(model["losses"], results["baseline_mse"])
        values[f"{kind}.breakthrough_step"] = "no step" if step is None else str(step)
        beyond = zero_beyond(model["gradient_flow_trained"])
        values[f"{kind}.trained_flow_zero_beyond"] = "no distance" if beyond is None else str(beyond)
    return values


def stale_quotes(text: str, values: dict[str, str]) -> list[str]:
    """Each quote in ``text`` whose value is not the run's, or whose key is unknown."""
    problems = []
    for match in QUOTE.finditer(text):
        key, value = match["key"], match["value"]
        if key not in values:
            problems.append(f"unknown figure {key!r} (known: {', '.join(sorted(values))})")
        elif value != values[key]:
            problems.append(f"{key}: the page says {value!r}, the run says {values[key]!r}")
    return problems


def requote(text: str, values: dict[str, str]) -> str:
    """``text`` with every quoted figure replaced by the run's value."""

    def replace(match: re.Match) -> str:
        key = match["key"]
        if key not in values:
            raise KeyError(f"unknown figure {key!r} in a page (known: {', '.join(sorted(values))})")
        return f"<!--demo:{key}-->{values[key]}<!--/demo-->"

    return QUOTE.sub(replace, text)


def picture_run_id(path: Path) -> str | None:
    """The run id in a PNG's text chunks (the CLI writes 'tinygrad-lstm demo run <id>')."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"tEXt":
            text = body.split(b"\x00", 1)[1].decode("latin-1")
        elif kind == b"zTXt":
            text = zlib.decompress(body.split(b"\x00", 1)[1][1:]).decode("latin-1")
        elif kind == b"iTXt":
            keyword, rest = body.split(b"\x00", 1)
            compressed, rest = rest[0], rest[2:]
            text = rest.split(b"\x00", 2)[2]
            text = (zlib.decompress(text) if compressed else text).decode("utf-8")
        else:
            continue
        found = re.search(r"tinygrad-lstm demo run (\w+)", text)
        if found:
            return found[1]
    return None


def refresh(run_folder: Path) -> list[Path]:
    """Copy a run's results and pictures into docs/ and requote every page; returns the files changed."""
    results = json.loads((run_folder / "results.json").read_text(encoding="utf-8"))
    for name in PICTURES:
        if picture_run_id(run_folder / name) != results["run_id"]:
            raise ValueError(f"{run_folder / name} was not drawn by the run in {run_folder / 'results.json'}")
    values = figures(results)
    changed = []
    shutil.copyfile(run_folder / "results.json", RESULTS)
    changed.append(RESULTS)
    for name in PICTURES:
        shutil.copyfile(run_folder / name, IMAGES / name)
        changed.append(IMAGES / name)
    for page in pages():
        text = page.read_text(encoding="utf-8")
        updated = requote(text, values)
        if updated != text:
            page.write_text(updated, encoding="utf-8")
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a finished run's output folder (results.json, pictures)")
    parser.add_argument("--run", action="store_true", help="run `tinygrad-lstm demo` (the documented command) first")
    args = parser.parse_args(argv)
    if args.run == (args.folder is not None):
        parser.error("give either --run or a run's output folder")
    if args.run:
        folder = Path(tempfile.mkdtemp(prefix="demo_run_"))
        subprocess.run([sys.executable, "-m", "tinygrad_lstm", "demo", "--out", str(folder)], check=True)
    else:
        folder = args.folder
    for path in refresh(folder):
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
