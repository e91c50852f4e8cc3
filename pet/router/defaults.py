"""The router's shipped calibration: ``router.calibration: default`` is ``default_router.yaml`` beside this module,
fitted by ``pet router calibrate`` for the default P (docs/router.md, "The shipped calibration")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "default_router.yaml"


def resolve_calibration(value: str | None) -> Path | None:
    """``router.calibration`` as a file: ``default`` -> the shipped :data:`DEFAULT_CALIBRATION`."""
    if not value:
        return None
    return DEFAULT_CALIBRATION if value == "default" else Path(value).expanduser()


def router_in_force(cfg: Any) -> dict[str, Any]:
    """The router a configuration runs (what ``pet status`` and ``pet config show`` print): policy, calibration
    file, P and E thresholds (the fitted ones when a calibration file is set), domain floor."""
    from pet.router.policy import RouterFile

    r = cfg.router
    cal = resolve_calibration(r.calibration)
    out = {"policy": r.policy.value, "calibration": str(cal) if cal else None, "p_threshold": r.p_threshold,
           "e_threshold": r.e_threshold, "domain_floor": r.domain_similarity_floor}
    if cal is not None:
        try:
            fitted = RouterFile.load(cal)
            out.update(p_threshold=fitted.p_threshold, e_threshold=fitted.e_threshold)
        except (OSError, ValueError) as err:
            out["calibration"] = f"{cal} (unreadable: {err})"
    return out
