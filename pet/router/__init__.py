"""The router: calibrated P -> E -> T escalation.

- :mod:`pet.router.calibrate`: calibrators (isotonic by PAVA, logistic) from confidence signals to P(good enough).
- :mod:`pet.router.policy`: ``RouterPolicy`` (``cascade``, ``pregen``, ``stacked``), ``RouteState``/``Decision``,
  the fitted router file.
- :mod:`pet.router.fit`: labelling (ROUGE-L vs references or agreement with T), the embedding / stacked
  scorers (good-enough label or gain of escalating, cross-validated L2) and threshold selection for a cloud
  budget or a quality target; used by ``pet router calibrate``.
- :mod:`pet.router.router`: ``Router``, the one object that makes every escalation decision (the device step,
  the expert domain, the E -> T judgement); the device client and the gateway call it.
- :mod:`pet.router.queries`: labelled query sets from offline text.

Everything here is numpy-only so the device client can import it without torch.
"""
