"""The router's cloud half, called by the gateway for tier "auto" (interface 7).

    from pet.router.cloud import CloudRouter
    r = CloudRouter.from_config(cfg, classifier)   # classifier: pet.router.domains.DomainClassifier or None
    domain = r.choose_domain(text)                 # expert domain, or None -> T
    if domain and r.expert_good_enough(reply["signals"]):  ...answer with the expert, else escalate to T

The same fitted router file (``router.calibration``) drives the device and the cloud, so E is judged with the
calibrator and threshold fitted by ``pet router calibrate``.
"""

from __future__ import annotations

from typing import Any

from pet.router.policy import Action, Decision, RouterPolicy, RouteState, policy_from_config


class CloudRouter:
    """Chooses the expert domain of a query and judges the expert's answer against the E threshold."""

    def __init__(self, policy: RouterPolicy, classifier: Any | None = None):
        self.policy = policy
        self.classifier = classifier

    @classmethod
    def from_config(cls, cfg: Any, classifier: Any | None = None) -> CloudRouter:
        """Build from a PetConfig (its ``router`` section); ``classifier`` may be None (no experts: always T)."""
        return cls(policy_from_config(cfg.router), classifier)

    def choose_domain(self, text: str) -> str | None:
        """The expert domain for ``text`` (None when no classifier, no expert, or below the similarity floor)."""
        return self.choose_domain_scored(text)[0]

    def choose_domain_scored(self, text: str) -> tuple[str | None, float | None]:
        """(domain or None, the best domain's similarity; None when there is nothing to compare with)."""
        if self.classifier is None or not text:
            return None, None
        domain, score = self.classifier.classify(text)
        return domain, float(score)

    def judge_expert(self, signals: dict[str, Any]) -> Decision:
        """The policy's decision on an expert answer's signals (ANSWER_E or RUN_T, with the reason)."""
        return self.policy.decide(RouteState(e_signals=signals))

    def expert_good_enough(self, signals: dict[str, Any]) -> bool:
        """True when the expert's calibrated confidence reaches the E threshold (else escalate to T).

        Malformed signals (missing keys, non-numbers) count as not good enough: escalating is the safe choice.
        """
        try:
            return self.judge_expert(signals).action is Action.ANSWER_E
        except ValueError:
            return False
