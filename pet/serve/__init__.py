"""The cloud side of `pet`: a Ray Serve graph of the T and E tiers behind a FastAPI gateway.

- :mod:`pet.serve.app` builds the application from a config (``build_app``, ``app_builder``, ``serve_config``).
- :mod:`pet.traditional.deployment` (T), :mod:`pet.expert.pool` (E), :mod:`pet.serve.gateway` (ingress) and
  :mod:`pet.serve.dispatch` (tier choice and fallbacks) are the deployments and their logic.
- :mod:`pet.serve.control` deploys/stops it; :mod:`pet.serve.client` is the HTTP client of ``pet ask``.
- :mod:`pet.serve.routes` holds extra gateway routes (``register_routes(app, gateway_getter)``).
"""
