"""The traditional tier (T): the general model in the cloud, served as a Ray Serve deployment
(:class:`pet.traditional.deployment.Traditional`) that batches requests over one :class:`pet.models.lm.CausalLM`.

T answers what P and E cannot, writes training data for the experts and for a user's P (augmentation), and is
the base every expert adapter sits on.
"""
