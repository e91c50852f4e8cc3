"""What the benchmarks share: where results and data live, percentiles, a headless pyplot, and writing a run's
JSON / Markdown / PNG. The machine a run happened on is :func:`pet.machine.machine_info` (``pet device bench``
records it too).

Benchmarks are scripts run from anywhere (``python benchmarks/<name>.py``); each puts the repository root on
``sys.path`` and then imports from here and from ``pet``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pet.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / "data"


def pct(xs: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``xs`` by nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def utc_now() -> str:
    """The time of a run, as results record it (ISO 8601, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (ImportError when matplotlib is not installed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_results(stem: str | Path, result: dict[str, Any], markdown: str | None = None,
                 plot: Callable[[Path], None] | None = None) -> list[Path]:
    """Write ``<stem>.json`` (atomically), ``<stem>.md`` when ``markdown`` is given, and ``<stem>.png`` through
    ``plot(path)`` (skipped with a note when matplotlib is missing); print and return what was written."""
    stem = Path(stem)
    written = [stem.with_name(stem.name + ".json")]
    atomic_write_json(written[0], result)
    if markdown is not None:
        written.append(stem.with_name(stem.name + ".md"))
        atomic_write_text(written[-1], markdown if markdown.endswith("\n") else markdown + "\n")
    if plot is not None:
        try:
            plot(stem.with_name(stem.name + ".png"))
            written.append(stem.with_name(stem.name + ".png"))
        except ImportError:
            print("matplotlib missing: no plot")
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return written
