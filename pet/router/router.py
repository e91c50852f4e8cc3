"""The router: the one object that makes every escalation decision of `pet`, P -> E -> T.

    from pet.router.router import Router
    router = Router.from_config(cfg, classifier)   # classifier: pet.router.domains.DomainClassifier, or None
    router.device_step(state)                      # on the device: RUN_P, ANSWER_P (keep P's answer) or ESCALATE
    router.choose_domain(text, registered)         # in the gateway: DomainChoice (a domain -> E, None -> T)
    router.judge_expert(signals)                   # in the gateway: ANSWER_E (keep E's answer) or RUN_T

Every answer says why. The device and the gateway build their Router from the same ``router`` config section, so
one fitted router file (``router.calibration``, made by ``pet router calibrate``) drives P's and E's thresholds.
What the gateway does when a tier fails (a replica died, a timeout, a full queue) is reliability, not answer
quality, and stays in :mod:`pet.serve.dispatch`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pet.router.policy import Action, Decision, RouterPolicy, RouteState, policy_from_config


@dataclass(frozen=True)
class DomainChoice:
    """The expert domain for a query (None: no expert, T answers), the best similarity, the floor, and why."""

    domain: str | None
    similarity: float | None = None
    floor: float | None = None
    reason: str = ""


class Router:
    """The device step, the domain choice and the E -> T judgement over one policy and one domain classifier."""

    def __init__(self, policy: RouterPolicy, classifier: Any | None = None):
        self.policy = policy
        self.classifier = classifier

    @classmethod
    def from_config(cls, cfg: Any, classifier: Any | None = None) -> Router:
        """Build from a PetConfig (its ``router`` section); ``classifier`` may be None (the device; no experts)."""
        return cls(policy_from_config(cfg.router), classifier)

    @property
    def needs_embedding(self) -> bool:
        """Whether :meth:`device_step` needs ``state.embedding`` (the pregen and stacked policies)."""
        return self.policy.needs_embedding

    def device_step(self, state: RouteState) -> Decision:
        """The next step on the device: RUN_P (generate with P first), ANSWER_P (keep P's answer) or ESCALATE."""
        if state.e_signals is not None:
            raise ValueError("the device step decides before any expert answered (RouteState.e_signals is set)")
        return self.policy.decide(state)

    def choose_domain(self, text: str, registered: Collection[str] | None = None) -> DomainChoice:
        """The expert domain for ``text``: the classifier's best domain if it reaches the similarity floor and
        (when ``registered`` is given) is still registered; otherwise None, so T answers."""
        if self.classifier is None or not text:
            return DomainChoice(None, reason="no domain classifier" if self.classifier is None else "no query text")
        domain, score = self.classifier.classify(text)
        similarity, floor = float(score), float(self.classifier.floor)
        if domain is None:
            return DomainChoice(None, similarity, floor, f"best domain similarity {similarity:.2f} < {floor:.2f}")
        if registered is not None and domain not in registered:
            return DomainChoice(None, similarity, floor, f"domain {domain!r} is no longer registered")
        return DomainChoice(domain, similarity, floor, f"domain {domain!r} similarity {similarity:.2f} >= {floor:.2f}")

    def judge_expert(self, signals: Any) -> Decision:
        """ANSWER_E when the expert's calibrated confidence reaches the E threshold, else RUN_T (escalate to T).

        Malformed signals (missing keys, non-numbers) are RUN_T: escalating is the safe choice.
        """
        try:
            return self.policy.decide(RouteState(e_signals=signals))
        except (ValueError, TypeError, KeyError):
            return Decision(Action.RUN_T, reason="malformed expert signals: escalate to T")

    def expert_good_enough(self, signals: Any) -> bool:
        """Whether :meth:`judge_expert` keeps the expert's answer."""
        return self.judge_expert(signals).action is Action.ANSWER_E
