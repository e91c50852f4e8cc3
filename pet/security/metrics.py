"""Prometheus counters of the envelope layer. Labels come from fixed sets only (never user input or content).

``pet_envelope_rejections_total{reason}``: refused request envelopes by reason (the only place a reason shows).
``pet_envelope_opened_total{suite}``: request envelopes opened successfully.
Both live in prometheus-client's default registry, which the gateway's ``GET /metrics`` exposes.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

REASONS = ("malformed", "version", "suite", "too_large", "timestamp", "replay", "unknown_key", "retired_key",
           "decrypt", "payload", "other")
SUITE_LABELS = ("x25519-hkdf-sha256-aes256gcm", "mlkem768-x25519-hkdf-sha256-aes256gcm")


def _counter(name: str, doc: str, label: str) -> Counter:
    # Re-importing this module (tests, Ray workers that reload code) must not register a second time.
    existing = REGISTRY._names_to_collectors.get(name)  # noqa: SLF001 - prometheus-client has no public lookup
    if existing is not None:
        return existing  # type: ignore[return-value]
    return Counter(name.removesuffix("_total"), doc, [label])


REJECTIONS = _counter("pet_envelope_rejections_total", "Refused encrypted request envelopes by reason", "reason")
OPENED = _counter("pet_envelope_opened_total", "Encrypted request envelopes opened", "suite")
for _r in REASONS:
    REJECTIONS.labels(reason=_r)
for _s in SUITE_LABELS:
    OPENED.labels(suite=_s)


def count_rejection(reason: str) -> None:
    """Count one refusal; unknown reasons are folded into ``other`` so labels stay a fixed set."""
    REJECTIONS.labels(reason=reason if reason in REASONS else "other").inc()


def count_open(suite: str) -> None:
    """Count one opened envelope."""
    OPENED.labels(suite=suite if suite in SUITE_LABELS else "other").inc()
