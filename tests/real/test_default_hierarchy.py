"""The defaults a new user gets: the shipped router calibration belongs to the default P, and the starter
experts the package ships verify (real models prepared under models/)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.real


def test_the_shipped_calibration_was_fitted_for_the_default_p(real_lm_dir):
    from pet.config.loader import load_config
    from pet.hierarchy import calibration_matches
    from pet.personal.bundle.default import default_bundle_recipe
    from pet.router.defaults import DEFAULT_CALIBRATION
    from pet.router.policy import RouterFile, policy_from_config

    cfg = load_config(None)
    assert cfg.personal.bundle == "default" and cfg.router.calibration == "default"
    ok, why = calibration_matches(cfg)
    assert ok, why  # regenerate pet/router/default_router.yaml when the default P's recipe changes
    fitted = RouterFile.load(DEFAULT_CALIBRATION)
    assert fitted.p_bundle == default_bundle_recipe(cfg)
    assert policy_from_config(cfg.router).name == cfg.router.policy.value


def test_a_changed_recipe_is_reported(real_lm_dir, tmp_path):
    import yaml

    from pet.config.loader import load_config
    from pet.hierarchy import calibration_matches
    from pet.router.defaults import DEFAULT_CALIBRATION

    doc = yaml.safe_load(DEFAULT_CALIBRATION.read_text())
    doc["p_bundle"]["quantize"] = "int4"
    other = tmp_path / "router.yaml"
    other.write_text(yaml.safe_dump(doc))
    ok, why = calibration_matches(load_config(None), other)
    assert not ok and "regenerate" in why
