"""The schema, the loader's error messages, the CLI's exit codes, and default.yaml == code defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pet.config.loader import DEFAULT_CONFIG, ConfigError, load_config
from pet.config.schema import PetConfig
from tests.conftest import FIXTURES, REPO

BAD = FIXTURES / "configs" / "bad"
GOOD = FIXTURES / "configs" / "good"


def test_default_yaml_matches_code_defaults():
    assert load_config(DEFAULT_CONFIG) == PetConfig()
    # and spells every key out, so users see what they can set
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert raw == PetConfig().model_dump(mode="json")


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.name)
def test_good_configs_load(path):
    assert isinstance(load_config(path), PetConfig)


def test_good_values_are_applied():
    cfg = load_config(GOOD / "autoscaling.yaml")
    opts = cfg.traditional.deployment.serve_options()
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"]["max_replicas"] == 2
    assert opts["ray_actor_options"] == {"num_cpus": 0.2}
    assert cfg.serve.http.port == 8123


@pytest.mark.parametrize(
    "name, expected",
    [
        ("unknown_key.yaml", ["traditional.modle", "unknown key"]),
        ("wrong_type.yaml", ["serve.http.port", "integer", "'eighty'"]),
        ("missing_model_path.yaml", ["traditional.model", "/nonexistent/folder/of/a/model"]),
        ("negative_threshold.yaml", ["router.p_threshold", "greater than or equal to 0"]),
        ("not_yaml.yaml", ["not valid YAML", "line "]),
        ("not_a_mapping.yaml", ["expected a mapping"]),
    ],
)
def test_bad_configs_name_file_key_and_expectation(name, expected):
    with pytest.raises(ConfigError) as info:
        load_config(BAD / name)
    msg = str(info.value)
    assert str(BAD / name) in msg
    for part in expected:
        assert part in msg, msg


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_autoscaling_bounds_cross_checked():
    with pytest.raises(Exception, match="max_replicas must be >= min_replicas"):
        PetConfig.model_validate({"expert": {"deployment": {"autoscaling_config": {"min_replicas": 3,
                                                                                   "max_replicas": 2}}}})


def _pet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pet", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_cli_check_valid_prints_summary():
    r = _pet("config", "check", "deployments/default.yaml")
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout and "T traditional" in r.stdout and "router" in r.stdout


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.glob("*.yaml")))
def test_cli_check_invalid_exits_2_without_traceback(name):
    r = _pet("config", "check", str(BAD / name))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert name in r.stderr


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from pet.cli.main import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch','ray','transformers','onnxruntime') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
