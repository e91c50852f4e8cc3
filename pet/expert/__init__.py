"""The expert (E) tier: a registry of LoRA adapters per domain (``registry``), registration end to end
(``register``: validate, synthesise, train, accept, store, credit the contributor), the domain's training and
held-out evaluation (``train``, on the shared trainer of :mod:`pet.models.lora`), domain data (``data``),
T-driven data synthesis (``synth``), built-in domain recipes (``recipes``), the shipped starter adapters
(``starter``) and the Serve deployment that multiplexes adapters over one base (``pool``).

Which domain a query belongs to is the router's decision (:mod:`pet.router.domains`); it reads domains
through :class:`pet.expert.registry.ExpertRegistry`.
"""
