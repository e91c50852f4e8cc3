"""The routing benchmark's labelled query set: built once from real offline text, kept in benchmarks/data/.

    python benchmarks/routing_queries.py           # rebuild benchmarks/data/routing_queries.jsonl (1500 queries)
    python benchmarks/routing_queries.py --check   # the set grows as a prefix: old ids, order and halves kept

Three kinds of query, each with a reference answer:

- ``python``: questions about Python standard-library functions; the reference is the first paragraph of
  the function's own docstring (the text ``pydoc`` shows), read from the running interpreter.
- ``personal``: a turn of a real conversation from the chitchat-dataset package; the reference is the reply
  the other person actually sent.
- ``general``: general-knowledge questions with short factual answers, written for this project
  (benchmarks/data/general_qa.jsonl).

:func:`build_query_set` mixes them deterministically and :func:`split` cuts a calibration part and a test
part that share no query, so the benchmark never scores on the data the calibrators were fitted on. The set is
written in the query format of ``pet router label`` (one JSON object a line: id, kind, query, reference); the
benchmarks read the written file, not a fresh build, because the python pool depends on the interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA  # noqa: E402
from pet.io import atomic_write_text  # noqa: E402

QUERY_SET = DATA / "routing_queries.jsonl"
QUERY_MIX = dict(n_python=600, n_personal=600, n_general=300, seed=0)  # the 1500-query set

PYTHON_MODULES = (
    "os", "os.path", "json", "re", "math", "itertools", "functools", "collections", "string", "textwrap",
    "shutil", "random", "statistics", "heapq", "bisect", "glob", "fnmatch", "base64", "hashlib", "zlib",
    "gzip", "csv", "datetime", "time", "calendar", "difflib", "copy", "pprint", "operator", "urllib.parse",
    "tempfile", "inspect", "html", "uuid", "secrets", "struct", "shlex", "platform", "keyword", "unicodedata",
)
# Added when the set grew past the 521 documented functions of PYTHON_MODULES: drawn only after all of those,
# from a shuffle of their own, so the questions of smaller sets keep their ids and order.
EXTRA_PYTHON_MODULES = (
    "sys", "typing", "dataclasses", "traceback", "codecs", "subprocess", "threading", "logging", "asyncio",
    "socket", "warnings", "pickle", "io",
)

_PY_TEMPLATES = (
    "In Python, what does {name} do?",
    "What is {name} used for in Python?",
    "Explain the Python function {name}.",
    "What does the standard library function {name} return?",
)

@dataclass
class Query:
    """One labelled query: the text a user sends and a reference answer."""

    id: str
    kind: str  # "python" | "personal" | "general"
    query: str
    reference: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _qid(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _first_paragraph(doc: str) -> str:
    paras = [p.strip() for p in doc.split("\n\n") if p.strip()]
    # Builtin docstrings open with a signature line such as "join(a, *p)"; skip it.
    while paras and "(" in paras[0].split("\n")[0] and paras[0].rstrip().endswith(")") and len(paras) > 1:
        paras = paras[1:]
    return " ".join(paras[0].split()) if paras else ""


def python_queries(n: int, seed: int = 0) -> list[Query]:
    """``n`` questions about documented stdlib functions, reference = first docstring paragraph.

    The first ``n`` of a larger call are the same questions (a prefix), so growing ``n`` keeps old ids. The
    pool depends on the interpreter's modules: importing torch first (as :func:`main` does, and as the written set
    was built) adds one inspect function, which reorders the shuffle; build the set the same way every time.
    """
    rng = random.Random(seed)
    found = _documented_functions(PYTHON_MODULES)
    names = sorted(found)
    rng.shuffle(names)
    extra = _documented_functions(EXTRA_PYTHON_MODULES)
    more = sorted(set(extra) - set(found))
    random.Random(seed + 1).shuffle(more)
    found.update(extra)
    out = []
    for name in (names + more)[:n]:
        q = rng.choice(_PY_TEMPLATES).format(name=name)
        out.append(Query(_qid("python", q), "python", q, found[name]))
    return out


def _documented_functions(modules: tuple[str, ...]) -> dict[str, str]:
    """``module.function`` -> first docstring paragraph, for the public functions with a 6-80 word one."""
    found: dict[str, str] = {}
    for modname in modules:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            ref = _first_paragraph(inspect.getdoc(obj) or "")
            if 6 <= len(ref.split()) <= 80:
                found.setdefault(f"{modname}.{attr}", ref)
    return found


def personal_queries(n: int, seed: int = 0) -> list[Query]:
    """``n`` conversation turns from chitchat-dataset with the partner's actual reply as reference."""
    import chitchat_dataset

    rng = random.Random(seed)
    convs = list(chitchat_dataset.Dataset().values())
    rng.shuffle(convs)
    out: list[Query] = []
    seen = set()
    for conv in convs:
        turns = [" ".join(m["text"].strip() for m in turn) for turn in conv.get("messages", [])]
        pairs = [(a, b) for a, b in zip(turns, turns[1:], strict=False)
                 if 5 <= len(a.split()) <= 40 and 4 <= len(b.split()) <= 40]
        if not pairs:
            continue
        a, b = rng.choice(pairs)
        if a in seen:
            continue
        seen.add(a)
        out.append(Query(_qid("personal", a), "personal", a, b))
        if len(out) >= n:
            break
    return out


def general_qa() -> list[tuple[str, str]]:
    """The written (question, answer) pairs of benchmarks/data/general_qa.jsonl, in file order (new ones appended,
    so a prefix keeps its ids and cached answers)."""
    rows = [json.loads(line) for line in (DATA / "general_qa.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [(r["query"], r["reference"]) for r in rows]


def general_queries(n: int | None = None) -> list[Query]:
    """The written general-knowledge questions (all, or the first ``n``)."""
    qa = general_qa() if n is None else general_qa()[:n]
    return [Query(_qid("general", q), "general", q, a) for q, a in qa]


def build_query_set(n_python: int, n_personal: int, n_general: int, seed: int = 0) -> list[Query]:
    """A deterministic mix of the three kinds, shuffled."""
    qs = python_queries(n_python, seed) + personal_queries(n_personal, seed) + general_queries(n_general)
    random.Random(seed).shuffle(qs)
    return qs


def split(queries: list[Query], calibration_fraction: float = 0.5) -> tuple[list[Query], list[Query]]:
    """Cut into (calibration, test) by a hash of the id, so the cut does not depend on list order."""
    cal, test = [], []
    for q in queries:
        h = int(hashlib.sha256(q.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (cal if h < calibration_fraction else test).append(q)
    return cal, test


def read_query_set(path: Path = QUERY_SET) -> list[Query]:
    """A written query set (JSON Lines of :meth:`Query.to_dict`)."""
    return [Query(**json.loads(line)) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def check() -> None:
    """The set grows as a prefix: more python questions keep the first ones (past the first module pool too),
    the written questions are unique, and a bigger set holds a smaller one with the same calibration/test halves."""
    base = len(_documented_functions(PYTHON_MODULES))
    small, big = python_queries(base - 5), python_queries(base + 40)
    assert [q.id for q in big[:len(small)]] == [q.id for q in small]
    assert len({q.id for q in big}) == len(big) == base + 40
    for q in big[base:]:
        assert any(f" {m}." in q.query for m in EXTRA_PYTHON_MODULES), q.query
    assert all(6 <= len(q.reference.split()) <= 80 for q in big)
    questions = [q.lower() for q, _ in general_qa()]
    assert len(set(questions)) == len(questions)
    assert [q.id for q in general_queries(10)] == [q.id for q in general_queries()[:10]]
    small_set, big_set = build_query_set(20, 20, 10), build_query_set(40, 30, 20)
    assert {q.id for q in small_set} <= {q.id for q in big_set}
    (cal_s, test_s), (cal_b, test_b) = split(small_set), split(big_set)
    assert {q.id for q in cal_s} <= {q.id for q in cal_b} and {q.id for q in test_s} <= {q.id for q in test_b}
    assert not {q.id for q in cal_b} & {q.id for q in test_b}
    print("query set checks passed")


def main() -> int:
    """Rebuild the query set (or only check how it grows)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the set grows as a prefix")
    ap.add_argument("--out", type=Path, default=QUERY_SET)
    args = ap.parse_args()
    check()
    if args.check:
        return 0
    import torch  # noqa: F401  (it adds an inspect function to the python pool: the written set was built with it)

    queries = build_query_set(**QUERY_MIX)
    if args.out.is_file():
        lost = {q.id for q in read_query_set(args.out)} - {q.id for q in queries}
        if lost:
            print(f"{len(lost)} queries of {args.out} are missing from this build (another interpreter?)")
    atomic_write_text(args.out, "".join(json.dumps(q.to_dict()) + "\n" for q in queries))
    print(f"wrote {len(queries)} queries to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
