"""The cloud side of `pet`: a Ray Serve graph of the T and E tiers behind a FastAPI gateway.

- :mod:`pet.serve.app` builds the application from a config (``build_app``, ``app_builder``, ``serve_config``).
- :mod:`pet.serve.gateway`: ``Gateway``, the ingress deployment; ``GatewayReplica`` is the same class without Serve.
- :mod:`pet.serve.dispatch`: ``Dispatcher``, the tier calls with the router's decisions and the reliability
  fallbacks (replica died, timeout, expert bypass).
- :mod:`pet.serve.routes`: the gateway's route groups (generate API, keys, augment, OpenAI-compatible) as mixins.
- :mod:`pet.serve.bodies` (JSON errors, body limits, envelopes), :mod:`pet.serve.guard` (the body guard and
  admission), :mod:`pet.serve.schemas`, :mod:`pet.serve.metrics`.
- :mod:`pet.serve.augmenter`: the Augmenter deployment; T and E are :mod:`pet.traditional.deployment` and
  :mod:`pet.expert.pool`.
- :mod:`pet.serve.control` deploys and stops the graph; :mod:`pet.serve.status` reports on it. The HTTP client of
  ``pet ask`` and the device is :mod:`pet.client`.
"""
