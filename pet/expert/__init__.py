"""Expert domains (the E tier's data side): a registry of LoRA adapters per domain, their training and
evaluation, T-driven data synthesis, domain recipes and the MiniLM domain classifier.

The serving side (loading adapters into a multiplexed pool) lives in :mod:`pet.serve`; it reads domains
through :class:`pet.expert.registry.ExpertRegistry`.
"""
