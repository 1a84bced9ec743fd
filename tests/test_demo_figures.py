"""The demo's figures in README.md and docs/ come from one run of the documented command.

docs/demo_results.json is a copy of that run's results.json; every figure a page quotes
(``<!--demo:KEY-->value<!--/demo-->``) must equal the run's, and both pictures must carry
the run's id. ``python scripts/demo_figures.py --run`` refreshes all of it from a new run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from tinygrad_lstm.apps.demo import DemoConfig, run_id

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("demo_figures", ROOT / "scripts" / "demo_figures.py")
demo_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_figures)

# Figures the README's table and sentence must quote (the guides quote more).
README_FIGURES = {
    f"{kind}.{name}" for kind in ("lstm", "rnn") for name in ("test_mse", "within_0.04", "within_0.08", "train_time")
} | {"total_time", "baseline_mse", "seed"}


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((ROOT / "docs" / "demo_results.json").read_text(encoding="utf-8"))


def test_the_kept_results_are_one_run_of_the_documented_command(results):
    assert results["run_id"] == run_id(results), "docs/demo_results.json was edited by hand"
    documented = {field.name: getattr(DemoConfig(), field.name) for field in dataclasses.fields(DemoConfig)}
    documented["device"] = "cpu"
    assert results["config"] == documented, "the kept run is not `tinygrad-lstm demo` with its defaults"
    assert results["blas_threads"] == 1  # the CLI's default --threads
    assert set(results["models"]) == {"lstm", "rnn"}


@pytest.mark.parametrize("page", demo_figures.pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_quoted_figure_is_the_runs(page, results):
    problems = demo_figures.stale_quotes(page.read_text(encoding="utf-8"), demo_figures.figures(results))
    assert not problems, (
        f"{page.relative_to(ROOT)} quotes figures that are not the kept run's "
        "(refresh: python scripts/demo_figures.py --run):\n" + "\n".join(problems)
    )


def test_the_readme_quotes_its_table_from_the_run():
    quoted = {match["key"] for match in demo_figures.QUOTE.finditer((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert README_FIGURES <= quoted, f"README.md does not quote {sorted(README_FIGURES - quoted)}"


def test_no_demo_figure_is_written_outside_a_quote(results):
    """A figure typed by hand (say the old '0.16288') would escape the check: look for each value bare."""
    values = demo_figures.figures(results)
    numbers = {key: value for key, value in values.items() if re.search(r"\d\.\d", value) and key != "baseline_mse"}
    for page in demo_figures.pages():
        bare = demo_figures.QUOTE.sub("", page.read_text(encoding="utf-8"))
        for key, value in numbers.items():
            assert value not in bare, f"{page.relative_to(ROOT)} writes {key} = {value} without a quote"


@pytest.mark.parametrize("name", demo_figures.PICTURES)
def test_the_pictures_were_drawn_by_the_kept_run(name, results):
    assert demo_figures.picture_run_id(ROOT / "docs" / "images" / name) == results["run_id"]


def test_refresh_rewrites_every_quote_from_a_new_run(tmp_path, monkeypatch, results):
    """The mechanism itself: a different run changes each quoted value, pictures and the copy."""
    pages = tmp_path / "docs"
    (pages / "images").mkdir(parents=True)
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    guide = pages / "lstm_from_primitives.md"
    guide.write_text((ROOT / "docs" / "lstm_from_primitives.md").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(demo_figures, "ROOT", tmp_path)
    monkeypatch.setattr(demo_figures, "RESULTS", pages / "demo_results.json")
    monkeypatch.setattr(demo_figures, "IMAGES", pages / "images")

    new_run = tmp_path / "run"
    new_run.mkdir()
    changed = json.loads(json.dumps(results))
    changed["models"]["rnn"]["test_mse"] = 0.12345678
    changed["total_seconds"] = 300.0
    changed["run_id"] = run_id(changed)
    (new_run / "results.json").write_text(json.dumps(changed), encoding="utf-8")
    for name in demo_figures.PICTURES:  # the kept pictures name the old run: refresh must refuse them
        shutil.copyfile(ROOT / "docs" / "images" / name, new_run / name)
    with pytest.raises(ValueError, match="was not drawn by the run"):
        demo_figures.refresh(new_run)

    for name in demo_figures.PICTURES:
        data = (
            (ROOT / "docs" / "images" / name)
            .read_bytes()
            .replace(results["run_id"].encode(), changed["run_id"].encode())
        )
        (new_run / name).write_bytes(data)
    demo_figures.refresh(new_run)
    values = demo_figures.figures(changed)
    assert values["rnn.test_mse"] == "0.12346" and values["total_time"] == "5.0 min"
    for page in (readme, guide):
        text = page.read_text(encoding="utf-8")
        assert demo_figures.stale_quotes(text, values) == []
        assert "<!--demo:rnn.test_mse-->0.12346<!--/demo-->" in text
    assert json.loads((pages / "demo_results.json").read_text(encoding="utf-8"))["run_id"] == changed["run_id"]


def test_a_stale_or_unknown_quote_is_reported():
    values = {"lstm.test_mse": "0.00027"}
    text = "MSE <!--demo:lstm.test_mse-->0.00031<!--/demo--> and <!--demo:lstm.nope-->1<!--/demo-->"
    problems = demo_figures.stale_quotes(text, values)
    assert len(problems) == 2
    assert "'0.00031'" in problems[0] and "'0.00027'" in problems[0]
    assert "unknown figure 'lstm.nope'" in problems[1]
