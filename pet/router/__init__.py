"""The router: calibrated P -> E -> T escalation.

Deciding (what runs on every query):

- :mod:`pet.router.router`: ``Router``, the one object that makes every escalation decision (the device step,
  the expert domain, the E -> T judgement); the device client and the gateway call it.
- :mod:`pet.router.policy`: ``RouterPolicy`` (``cascade``, ``pregen``, ``stacked``; the ``POLICIES`` table),
  ``RouteState``/``Decision``, and ``RouterFile``, the fitted router file a policy reads.
- :mod:`pet.router.calibrate`: calibrators (isotonic by PAVA, logistic) from confidence signals to P(good enough).
- :mod:`pet.router.scorers`: the linear scorers over the query embedding (``pregen``, ``stacked``).
- :mod:`pet.router.domains`: ``DomainClassifier``, which expert domain a query belongs to.
- :mod:`pet.router.defaults`: the calibration shipped for the default P.

Fitting (offline, ``pet router label`` then ``pet router calibrate``):

- :mod:`pet.router.label`: the labelled JSONL format, and making it from your own queries with your own tiers.
- :mod:`pet.router.fit`: good-enough labels (ROUGE-L vs references or agreement with T), the cross-validated
  embedding scorers, and thresholds for a cloud budget or a quality target.

The deciding modules are numpy-only so the device client can import them without torch; fitting and labelling
import torch only inside the functions that load models.
"""
