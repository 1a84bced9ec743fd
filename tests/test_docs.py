"""Every ```python block in README.md and docs/*.md runs, page by page.

Each page gets one fresh module namespace; its blocks run in order in it, so a block may
use names defined by the blocks above it (as a reader who pastes them one by one would).
A new page under docs/ is picked up without touching this file.

Markers, written after ``python`` on the opening fence line:

    ```python no-run                  shown to the reader, never executed (use sparingly,
                                      e.g. for code that needs a GPU or a long run)
    ```python requires=torch,scipy    executed only when those modules import; skipped
                                      otherwise (later blocks must not depend on it)

Fences in other languages (```bash, ```text, ```pycon, ...) are not executed. Code is
compiled with the page's path and real line numbers, so a traceback points at the line
of the .md file that failed. Blocks run with the working directory set to a temporary
directory (whatever they write lands there) and with MPLBACKEND=Agg.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import tinygrad_lstm as tl
from tinygrad_lstm.tensor import Function, ops

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

NO_RUN = "no-run"
REQUIRES = "requires="
MAX_FRAMES = 20  # of a failure's traceback, innermost first to go
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)$")


@dataclass
class Block:
    line: int  # 1-based line number of the block's first code line in the page
    code: str
    flags: tuple[str, ...]

    @property
    def runs(self) -> bool:
        return NO_RUN not in self.flags

    def missing_modules(self) -> list[str]:
        wanted = [name for flag in self.flags if flag.startswith(REQUIRES) for name in flag[len(REQUIRES) :].split(",")]
        return [name for name in wanted if name and importlib.util.find_spec(name) is None]


def python_blocks(text: str) -> list[Block]:
    """The ```python fenced blocks of a Markdown text, in order (CommonMark fence rules)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        words = opening["info"].split()
        body_start = index
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            index += 1
        body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[body_start:index]]
        index += 1  # past the closing fence (or the end of the text: CommonMark closes it there)
        if words and words[0] == "python":
            blocks.append(Block(line=body_start + 1, code="\n".join(body) + "\n", flags=tuple(words[1:])))
    return blocks


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _failure_message(page: Path, block: Block, error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    in_page = [frame for frame in frames if frame.filename == str(page)]
    where = f"line {in_page[-1].lineno}: {in_page[-1].line}" if in_page else "(compiling the block)"
    if isinstance(error, SyntaxError) and error.filename == str(page):
        where = f"line {error.lineno}: {(error.text or '').strip()}"
    # Drop this file's own frames; keep the page's and the library's (the innermost ones).
    frames = [frame for frame in frames if frame.filename != __file__]
    shown = frames[-MAX_FRAMES:]
    cut = f"  ... {len(frames) - len(shown)} outer frames left out ...\n" if len(shown) < len(frames) else ""
    details = cut + "".join(traceback.format_list(shown)) + "".join(traceback.format_exception_only(error))
    return (
        f"{_page_id(page)}: the python block starting at line {block.line} failed at {where}\n"
        f"{''.join(traceback.format_exception_only(error)).strip()}\n\n"
        f"Traceback (page and library frames):\n{details}"
    )


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temp working directory, Agg plots, the CPU as default device; global modes put back afterwards.

    The pages describe a default setup, so they run on "cpu" even when TINYGRAD_LSTM_DEVICE
    points the rest of the suite at another device.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Hypothesis fixed its storage directory (./.hypothesis) when it was imported; point
    # it into the temp directory too, so examples using @given write nothing in the repo.
    hypothesis_configuration = sys.modules.get("hypothesis.configuration")
    if hypothesis_configuration is not None:
        previous_home = vars(hypothesis_configuration).get("__hypothesis_home_directory")
        hypothesis_configuration.set_hypothesis_home_dir(tmp_path / ".hypothesis")
    device, grad_enabled = tl.get_default_device(), tl.is_grad_enabled()
    tl.set_default_device("cpu")
    yield tmp_path
    tl.set_default_device(device)
    if hypothesis_configuration is not None:
        hypothesis_configuration.set_hypothesis_home_dir(previous_home)
    assert tl.is_grad_enabled() == grad_enabled, "a page left gradient recording switched off"
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples_run(page: Path, isolated) -> None:
    module_name = "docs_page_" + re.sub(r"\W", "_", page.stem)
    module = types.ModuleType(module_name)
    module.__file__ = str(page)
    sys.modules[module_name] = module  # dataclasses, pickle and inspect look modules up here
    skipped = []
    try:
        for block in python_blocks(page.read_text(encoding="utf-8")):
            missing = block.missing_modules()
            if not block.runs or missing:
                skipped.append(f"line {block.line}" + (f" (needs {', '.join(missing)})" if missing else ""))
                continue
            source = "\n" * (block.line - 1) + block.code  # keep the page's line numbers
            failure = None
            try:
                exec(compile(source, str(page), "exec"), module.__dict__)
            except Exception as error:
                failure = _failure_message(page, block, error)
            if failure is not None:  # failed outside the except: no "during handling" noise
                pytest.fail(failure, pytrace=False)
    finally:
        del sys.modules[module_name]
    if skipped:
        print(f"{_page_id(page)}: not executed: {', '.join(skipped)}")


def test_collector_reads_fences_and_markers() -> None:
    text = "\n".join(
        [
            "intro",
            "```python",  # line 2
            "a = 1",
            "```",
            "````markdown",
            "```python",
            "not_code = True",
            "```",
            "````",
            "- item",
            "  ```python no-run",  # line 11, indented in a list
            "  b = a + 1",
            "  ```",
            "```bash",
            "echo hi",
            "```",
            "~~~python requires=some_missing_module",
            "import some_missing_module",
            "~~~",
        ]
    )
    blocks = python_blocks(text)
    assert [(block.line, block.code, block.runs) for block in blocks] == [
        (3, "a = 1\n", True),
        (12, "b = a + 1\n", False),
        (18, "import some_missing_module\n", True),
    ]
    assert blocks[2].missing_modules() == ["some_missing_module"]


def test_vjp_table_lists_every_primitive() -> None:
    """docs/how_autodiff_works.md names every Function subclass in tensor/ops.py."""
    page = (ROOT / "docs" / "how_autodiff_works.md").read_text(encoding="utf-8")
    primitives = sorted(
        name
        for name, value in vars(ops).items()
        if isinstance(value, type) and issubclass(value, Function) and value.__module__ == ops.__name__
    )
    assert primitives, "found no primitives in ops.py"
    missing = [name for name in primitives if not re.search(rf"^\|\s*`{name}`\s*\|", page, flags=re.MULTILINE)]
    assert not missing, f"the VJP table in docs/how_autodiff_works.md has no row for: {', '.join(missing)}"
