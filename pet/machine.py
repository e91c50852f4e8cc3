"""What machine a benchmark ran on: every benchmark records this beside its numbers (these machines are shared
and noisy, so the load average is part of the result)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra: Any) -> dict[str, Any]:
    """nproc, CPU model, Python version and 1-minute load average, plus ``extra`` (thread settings...)."""
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2), **extra}
