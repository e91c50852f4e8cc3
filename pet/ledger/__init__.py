"""Usage metering and contribution rewards.

    from pet.ledger import Ledger, LedgerError, Meter
    led = Ledger.from_config(cfg)          # or Ledger(path, prices, reward_per_sample)
    led.record_usage(request_id, user, tier, prompt_tokens, completion_tokens) -> bool   # False = duplicate id
    led.credit_contribution(event_id, contributor, samples, purpose) -> bool
    meter = Meter.from_config(cfg)         # the same calls, but never raises (for the request path)

Storage goes through :class:`LedgerStore`; :class:`SqliteLedgerStore` is the embedded default.
"""

from pet.ledger.ledger import Ledger, Meter, default_ledger_path, purpose_tier
from pet.ledger.sqlite import SqliteLedgerStore
from pet.ledger.store import LedgerError, LedgerStore, RewardEvent, SummaryRow, UsageEvent

__all__ = [
    "Ledger", "LedgerError", "LedgerStore", "Meter", "RewardEvent", "SqliteLedgerStore", "SummaryRow",
    "UsageEvent", "default_ledger_path", "purpose_tier",
]
