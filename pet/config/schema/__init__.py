"""The one configuration schema of `pet`.

Every YAML file (``deployments/*.yaml``) is validated against :class:`PetConfig` before any work starts.
The models here hold configuration only; runtime classes take a validated object, and a command-line
flag overrides a field through :meth:`StrictModel.updated` (validated like the YAML). Defaults in these modules
are the embedded defaults, and ``deployments/default.yaml`` spells them out (a test keeps the two equal).

The sections live beside this module: :mod:`.base` (StrictModel, builtin model names), :mod:`.tiers` (T, E, P,
embedding, router, crypto, ledger), :mod:`.personal` (personalisation, distillation), :mod:`.serve` (Ray Serve
options, HTTP, gateway), :mod:`.questioner` (questioner profiles).

Check a file with ``pet config check deployments/default.yaml``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pet.config.schema.base import StrictModel
from pet.config.schema.personal import PersonalizationConfig
from pet.config.schema.questioner import QuestionerConfig
from pet.config.schema.serve import ServeConfig
from pet.config.schema.tiers import (
    CryptoConfig,
    EmbeddingConfig,
    ExpertConfig,
    LedgerConfig,
    PersonalConfig,
    RouterConfig,
    TraditionalConfig,
)


class PetConfig(StrictModel):
    """The whole platform."""

    version: Literal[1] = Field(1, description="schema version")
    models_dir: str | None = Field(
        None, description="model folder (default: $PET_MODELS_DIR, $PET_HOME/models, <checkout>/models or the user "
                          "data folder; see pet.paths)")
    traditional: TraditionalConfig = Field(default_factory=TraditionalConfig)
    expert: ExpertConfig = Field(default_factory=ExpertConfig)
    personal: PersonalConfig = Field(default_factory=PersonalConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    personalization: PersonalizationConfig = Field(default_factory=PersonalizationConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    questioner: QuestionerConfig = Field(default_factory=QuestionerConfig)
