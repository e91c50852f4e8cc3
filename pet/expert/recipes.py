"""Default expert domains built from real text that installs with the project (no downloads).

    pet expert recipe python   --out runs/experts/python.txt   --examples-out runs/experts/python.queries.txt
    pet expert recipe chitchat --out runs/experts/chitchat.jsonl --examples-out runs/experts/chitchat.queries.txt

- ``python``: the Python standard library's own documentation, rendered locally with :mod:`pydoc` (plain
  text) for a fixed list of widely used modules. Example queries are the first docstring lines of the
  modules' public functions and classes, phrased as a question.
- ``chitchat``: casual English conversation from the ``chitchat-dataset`` package (MIT): consecutive turns
  of different speakers become prompt/response pairs. Example queries are real opening turns.

Each recipe also yields held-out queries that never enter the data (other stdlib modules; other
conversations) for ``benchmarks/domain_routing.py``. Recipes form a small name -> class table.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import pydoc
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from pet.io import atomic_write_text


@dataclass
class RecipeOutput:
    """What a recipe wrote."""

    data_path: Path
    examples_path: Path | None
    bytes: int
    samples: int
    examples: int


class Recipe(ABC):
    """A domain whose data can be produced offline from an installed source."""

    name: str = ""
    suffix: str = ".txt"
    description: str = ""

    @abstractmethod
    def data(self) -> tuple[str, int]:
        """(file text, sample count) of the training data."""

    @abstractmethod
    def examples(self, n: int = 64) -> list[str]:
        """Example routing queries of the domain (drawn from the same source as the data)."""

    @abstractmethod
    def heldout_queries(self, n: int = 40, seed: int = 1) -> list[str]:
        """Queries of the domain that are NOT in the data or examples (for routing benchmarks)."""

    def write(self, out: str | Path, examples_out: str | Path | None = None, n_examples: int = 64) -> RecipeOutput:
        """Write the data file (and optionally the examples file) atomically."""
        out = Path(out)
        if out.suffix.lower() != self.suffix:
            raise ValueError(f"recipe {self.name!r} writes {self.suffix} data; name the output file *{self.suffix}")
        text, n = self.data()
        atomic_write_text(out, text)
        ex_path, n_ex = None, 0
        if examples_out is not None:
            ex = self.examples(n_examples)
            ex_path = Path(examples_out)
            atomic_write_text(ex_path, "".join(q.replace("\n", " ") + "\n" for q in ex))
            n_ex = len(ex)
        return RecipeOutput(out, ex_path, len(text.encode()), n, n_ex)


# ----------------------------------------------------------------------------------------------------------------
# python: pydoc text of the standard library

PY_MODULES = (
    "json", "pathlib", "os.path", "re", "collections", "itertools", "functools", "datetime", "subprocess",
    "argparse", "logging", "csv", "random", "math", "statistics", "string", "textwrap", "shutil", "tempfile",
    "glob", "heapq", "bisect", "dataclasses", "enum", "typing", "contextlib", "copy", "pickle", "sqlite3",
    "urllib.parse", "hashlib", "base64", "time", "threading", "queue", "io", "struct", "zipfile", "gzip",
    "decimal", "fractions", "operator", "inspect", "traceback", "uuid", "shlex", "fnmatch", "difflib", "pprint",
    "calendar", "configparser",
)
# Never in the data: held-out routing queries come from these.
PY_HELDOUT_MODULES = (
    "tarfile", "secrets", "timeit", "weakref", "abc", "array", "codecs", "locale", "platform", "selectors",
    "ipaddress", "mimetypes", "getpass", "warnings", "numbers", "graphlib", "filecmp", "html", "zlib", "sched",
)
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_SECTION = re.compile(r"^(FILE|MODULE REFERENCE)\n(?:(?:    .*|\s*)\n)*", re.M)
QUESTION_FORMS = ("How do I use {name} in Python? {doc}", "What does {name} do? {doc}",
                  "Python {name}: {doc}", "Explain {name}. {doc}")


def pydoc_text(module: str, max_chars: int = 40_000) -> str:
    """Plain-text pydoc page of ``module`` without machine-specific sections (file paths, addresses)."""
    mod = importlib.import_module(module)
    text = pydoc.render_doc(mod, renderer=pydoc.plaintext)
    text = _SECTION.sub("", text + "\n")
    text = _ADDR.sub("", text)
    return text[:max_chars].rstrip() + "\n"


def doc_queries(modules: tuple[str, ...]) -> list[str]:
    """Question-phrased first docstring lines of each module's public functions and classes."""
    out = []
    for m in modules:
        mod = importlib.import_module(m)
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)
                                            or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__module__", m) not in (m, mod.__name__):
                continue  # re-exported from elsewhere
            doc = (inspect.getdoc(obj) or "").strip().split("\n\n")[0].replace("\n", " ")
            if 15 <= len(doc) <= 240 and not doc.startswith(attr + "("):
                form = QUESTION_FORMS[len(out) % len(QUESTION_FORMS)]
                out.append(form.format(name=f"{m}.{attr}", doc=doc))
    return out


class PythonRecipe(Recipe):
    """Python standard-library documentation (pydoc)."""

    name = "python"
    suffix = ".txt"
    description = "pydoc text of widely used Python standard-library modules"

    def data(self) -> tuple[str, int]:
        """pydoc pages of :data:`PY_MODULES`, separated by blank lines."""
        pages = [pydoc_text(m) for m in PY_MODULES]
        return "\n\n".join(pages), len(pages)

    def examples(self, n: int = 64) -> list[str]:
        """Docstring questions about the data's modules."""
        qs = doc_queries(PY_MODULES)
        random.Random(0).shuffle(qs)
        return qs[:n]

    def heldout_queries(self, n: int = 40, seed: int = 1) -> list[str]:
        """Docstring questions about modules that are not in the data."""
        qs = doc_queries(PY_HELDOUT_MODULES)
        random.Random(seed).shuffle(qs)
        return qs[:n]


# ----------------------------------------------------------------------------------------------------------------
# chitchat: casual conversation (chitchat-dataset)


@functools.lru_cache(maxsize=1)
def _conversations() -> list[list[str]]:
    """Every conversation as a list of turns (a turn = one speaker's consecutive messages), in key order."""
    try:
        import chitchat_dataset
    except ImportError as err:
        raise RuntimeError("the chitchat-dataset package is not installed; install it with: "
                           "pip install --no-deps chitchat-dataset==0.9.0") from err
    ds = chitchat_dataset.Dataset()
    out = []
    for key in sorted(ds):
        turns = [" ".join(m["text"].strip() for m in turn if m.get("text", "").strip())
                 for turn in ds[key]["messages"]]
        out.append([t for t in turns if t])
    return out


class ChitchatRecipe(Recipe):
    """Casual English conversation from the chitchat-dataset package."""

    name = "chitchat"
    suffix = ".jsonl"
    description = "prompt/response turns of casual conversations (chitchat-dataset, MIT)"
    n_conversations = 600  # data: the first 600 conversations in key order; held-out queries come from the last

    def data(self) -> tuple[str, int]:
        """prompt/response pairs from consecutive turns of the first conversations."""
        lines = []
        for conv in _conversations()[: self.n_conversations]:
            for a, b in zip(conv, conv[1:], strict=False):
                if 2 <= len(a) <= 400 and 2 <= len(b) <= 400:
                    lines.append(json.dumps({"prompt": a, "response": b}, ensure_ascii=False))
        return "".join(line + "\n" for line in lines), len(lines)

    def examples(self, n: int = 64) -> list[str]:
        """Turns of the data's conversations that are long enough to say something."""
        turns = [t for conv in _conversations()[: self.n_conversations] for t in conv if 20 <= len(t) <= 300]
        random.Random(0).shuffle(turns)
        return list(dict.fromkeys(turns))[:n]

    def heldout_queries(self, n: int = 40, seed: int = 1) -> list[str]:
        """Turns of conversations that are not in the data."""
        turns = [t for conv in _conversations()[-500:] for t in conv if 20 <= len(t) <= 300]
        random.Random(seed).shuffle(turns)
        return list(dict.fromkeys(turns))[:n]


RECIPES: dict[str, type[Recipe]] = {r.name: r for r in (PythonRecipe, ChitchatRecipe)}


def get_recipe(name: str) -> Recipe:
    """An instance of the named recipe; ValueError listing the known names."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]()
