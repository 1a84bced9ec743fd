"""A character-level LSTM language model: Embedding → LSTM → Linear, trained by truncated BPTT.

The text is cut into ``batch_size`` parallel strips; each training step reads the next
``seq_len`` characters of every strip, predicts each next character (cross-entropy),
and carries the LSTM state into the following step with ``nn.detach_state``: the state
flows forward across chunks, the gradient stops at the chunk boundary (truncated BPTT).

With no text given, the corpus is built at run time from the docstrings of Python's own
standard library (read with ``ast``, nothing imported or downloaded), each under the
``def``/``class`` line it documents.

Checkpoints are ``tl.save`` archives (.npz, numbers only): the model's parameters, the
vocabulary as an integer array of code points, the step, the model's sizes, Adam's
moments and the carried LSTM state, so a resumed run continues exactly where the saved
one stopped. Nothing here prints: ``cli.py`` shows the progress.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import nn, optim
from ..nn import functional as F
from ..serialization import load, save
from ..tensor import Tensor, manual_seed, no_grad

LN2 = float(np.log(2.0))


class BadInput(ValueError):
    """The text or the checkpoint cannot be used (missing, empty, corrupt, mismatched)."""


@dataclass
class CharLMConfig:
    """Sizes and training budget (the defaults are the documented run)."""

    embedding_dim: int = 32
    hidden_size: int = 128
    num_layers: int = 1
    seq_len: int = 64
    batch_size: int = 64
    steps: int = 2500
    lr: float = 8e-3
    clip: float = 1.0
    seed: int = 0
    device: str | None = None


# --------------------------------------------------------------------------- text


def stdlib_corpus(max_chars: int = 1_000_000, on_file: Callable[[int, int], None] | None = None) -> str:
    """Docstrings of the standard library's top-level modules, each under its def/class line.

    ``on_file(done, total)`` is called after each source file is read (for a progress bar).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise BadInput(f"no standard-library sources found under {root}; pass --text FILE instead")
    pieces, size = [], 0
    for done, path in enumerate(files, 1):
        if on_file is not None:
            on_file(done, len(files))
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for piece in _documented(tree):
            pieces.append(piece)
            size += len(piece) + 2
            if size >= max_chars:
                return "\n\n".join(pieces)[:max_chars]
    return "\n\n".join(pieces)


def _documented(tree: ast.Module) -> list[str]:
    """'def name(args):' + the indented docstring, for every documented def/class of a module."""
    pieces = []
    module_doc = ast.get_docstring(tree)
    if module_doc:
        pieces.append(f'"""{module_doc}"""')
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        if isinstance(node, ast.ClassDef):
            bases = ", ".join(ast.unparse(base) for base in node.bases)
            header = f"class {node.name}({bases}):" if bases else f"class {node.name}:"
        else:
            header = f"def {node.name}({ast.unparse(node.args)}):"
        body = "\n".join(("    " + line) if line else "" for line in f'"""{doc}"""'.splitlines())
        pieces.append(f"{header}\n{body}")
    return pieces


def read_text(
    path: str | os.PathLike | None, max_chars: int = 1_000_000, on_file: Callable[[int, int], None] | None = None
) -> str:
    """The training text: the file at ``path`` (UTF-8), or the standard-library corpus."""
    if path is None:
        return stdlib_corpus(max_chars, on_file)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"no such text file: {os.fspath(path)}") from None
    except IsADirectoryError:
        raise BadInput(f"{os.fspath(path)} is a directory, not a text file") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{os.fspath(path)} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise BadInput(f"cannot read {os.fspath(path)}: {error.strerror}") from None
    if not text.strip():
        raise BadInput(f"{os.fspath(path)} is empty: there is nothing to learn from")
    return text[:max_chars]


class Vocabulary:
    """Characters <-> integer ids; stored in checkpoints as an array of code points."""

    def __init__(self, characters: str | list[str]):
        self.characters = sorted(set(characters))
        self.index = {character: i for i, character in enumerate(self.characters)}

    @classmethod
    def from_codepoints(cls, codepoints: np.ndarray) -> Vocabulary:
        return cls([chr(int(c)) for c in codepoints])

    def codepoints(self) -> np.ndarray:
        return np.array([ord(c) for c in self.characters], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = "".join(unknown[:10])
            raise BadInput(f"the text has {len(unknown)} character(s) not in the vocabulary, e.g. {shown!r}")
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def decode(self, ids: Any) -> str:
        return "".join(self.characters[int(i)] for i in ids)


# -------------------------------------------------------------------------- model


class CharLM(nn.Module):
    """Embedding → LSTM → Linear: ids (T, batch) -> logits (T, batch, vocab) and the state."""

    def __init__(
        self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int = 1, device: str | None = None
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, device=device)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers, device=device)
        self.head = nn.Linear(hidden_size, vocab_size, device=device)

    def forward(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        output, state = self.lstm(self.embedding(ids), state)
        return self.head(output), state


class Batches:
    """Truncated-BPTT batches: ``batch_size`` strips of the text, read ``seq_len`` at a time.

    ``batch(step)`` returns (inputs, targets), both (seq_len, batch_size) ids, and whether
    this chunk starts the strips again (then the carried state must be reset).
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int):
        strip = len(data) // batch_size
        if strip < seq_len + 1:
            raise BadInput(
                f"the text has {len(data)} characters; a batch of {batch_size} strips of "
                f"{seq_len + 1} needs at least {batch_size * (seq_len + 1)} (lower --batch or --seq-len)"
            )
        self.strips = data[: strip * batch_size].reshape(batch_size, strip).T  # (strip, batch)
        self.seq_len = seq_len
        self.chunks = (strip - 1) // seq_len

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, bool]:
        chunk = step % self.chunks
        start = chunk * self.seq_len
        window = self.strips[start : start + self.seq_len + 1]
        return window[:-1], window[1:], chunk == 0


# ------------------------------------------------------------------ training state


class Trainer:
    """Model, optimizer, vocabulary, data and step: what a checkpoint saves and restores."""

    def __init__(self, text: str, config: CharLMConfig, vocab: Vocabulary | None = None):
        self.config = config
        self.vocab = vocab if vocab is not None else Vocabulary(text)
        self.batches = Batches(self.vocab.encode(text), config.batch_size, config.seq_len)
        manual_seed(config.seed)
        self.model = CharLM(
            len(self.vocab), config.embedding_dim, config.hidden_size, config.num_layers, device=config.device
        )
        self.parameters = dict(self.model.named_parameters())
        self.optimizer = optim.Adam(self.parameters.values(), lr=config.lr)
        self.step = 0
        self.state = None

    def train_step(self) -> float:
        """One chunk of truncated BPTT; returns the mean cross-entropy in nats per character."""
        inputs, targets, restart = self.batches.batch(self.step)
        if restart:
            self.state = None
        device = self.config.device
        logits, state = self.model(Tensor(inputs, device=device), self.state)
        loss = F.cross_entropy(logits, Tensor(targets, device=device))
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters.values(), self.config.clip)
        self.optimizer.step()
        self.state = nn.detach_state(state)  # keep the values, cut the graph
        self.step += 1
        return loss.item()

    # ---------------------------------------------------------------- checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """Parameters, vocabulary (code points), step, sizes, Adam's moments and the carried state (.npz)."""
        arrays: dict[str, Any] = {f"model.{name}": p for name, p in self.parameters.items()}
        arrays["vocab"] = self.vocab.codepoints()
        arrays["step"] = np.array(self.step)
        if self.state is not None:  # the carried (h, c): resuming then continues exactly
            arrays["bptt_state.h"], arrays["bptt_state.c"] = self.state
        for key in ("embedding_dim", "hidden_size", "num_layers"):
            arrays[f"config.{key}"] = np.array(getattr(self.config, key))
        for key, value in self.optimizer.state_dict().items():
            arrays[f"adam.{key}"] = value
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save(arrays, path)

    @classmethod
    def resume(cls, path: str | os.PathLike, text: str, config: CharLMConfig) -> Trainer:
        """A trainer restored from a checkpoint; the model's sizes come from the checkpoint."""
        arrays = read_checkpoint(path)
        try:
            for key in ("embedding_dim", "hidden_size", "num_layers"):
                setattr(config, key, int(arrays[f"config.{key}"]))
            trainer = cls(text, config, Vocabulary.from_codepoints(arrays["vocab"]))
            trainer.model.load_state_dict(
                {name[len("model.") :]: value for name, value in arrays.items() if name.startswith("model.")}
            )
            trainer.step = int(arrays["step"])
            if "bptt_state.h" in arrays:
                dtype, device = trainer.parameters["lstm.weight_hh_l0"].dtype, config.device
                trainer.state = tuple(
                    Tensor(arrays[f"bptt_state.{part}"], dtype=dtype, device=device) for part in ("h", "c")
                )
            trainer.optimizer.load_state_dict(
                {name[len("adam.") :]: value for name, value in arrays.items() if name.startswith("adam.")}
            )
        except BadInput:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise BadInput(f"{os.fspath(path)} is not a charlm checkpoint this model can use ({error})") from None
        return trainer


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``tl.load`` with its errors turned into one-line ``BadInput`` messages."""
    try:
        arrays = load(path)
    except FileNotFoundError:
        raise BadInput(f"no such checkpoint: {os.fspath(path)}") from None
    except (ValueError, OSError) as error:
        raise BadInput(f"cannot read checkpoint {os.fspath(path)}: {error}") from None
    missing = [key for key in ("vocab", "step", "config.hidden_size") if key not in arrays]
    if missing:
        raise BadInput(f"{os.fspath(path)} is not a charlm checkpoint (missing {', '.join(missing)})")
    return arrays


# ---------------------------------------------------------------------- sampling


def generate(
    model: CharLM,
    vocab: Vocabulary,
    length: int,
    temperature: float = 1.0,
    prime: str = "\n",
    rng: np.random.Generator | None = None,
    device: str | None = None,
) -> str:
    """``length`` characters sampled one at a time from softmax(logits / temperature)."""
    if temperature <= 0:
        raise BadInput(f"temperature must be positive, got {temperature}")
    rng = rng if rng is not None else np.random.default_rng()
    prime = "".join(c for c in prime if c in vocab.index) or vocab.characters[0]
    state, generated = None, []
    with no_grad():
        ids = vocab.encode(prime).reshape(-1, 1)
        for _ in range(length):
            logits, state = model(Tensor(ids, device=device), state)
            scaled = logits[-1, 0].numpy().astype(np.float64) / temperature
            probabilities = np.exp(scaled - scaled.max())
            probabilities /= probabilities.sum()
            next_id = int(rng.choice(len(probabilities), p=probabilities))
            generated.append(next_id)
            ids = np.array([[next_id]])
    return vocab.decode(generated)


def train(
    trainer: Trainer,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``trainer`` up to ``config.steps``; returns the losses (nats/char) of the steps run.

    ``on_step(step, loss)`` is called after each step (step counts from 1); the caller
    samples, checkpoints and reports from there.
    """
    losses = []
    while trainer.step < trainer.config.steps:
        losses.append(trainer.train_step())
        if on_step is not None:
            on_step(trainer.step, losses[-1])
    return losses
