"""The rule for default folders (pet.paths) and the places that must agree on it: the default config, the
summary of `pet config check`, and the detached `pet deploy` child."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from pet import paths
from pet.config.loader import EMBEDDED_DEFAULTS, default_config_source, load_config
from pet.config.schema import PetConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No PET_* or XDG variable of the developer's shell leaks in; HOME is a tmp folder."""
    for name in ("PET_HOME", "PET_MODELS_DIR", "PET_STATE_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory outside any checkout."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def fake_checkout(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return root


def test_pet_home_wins_over_checkout_and_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    lay = paths.layout()
    assert (lay.models, lay.state, lay.rule) == (tmp_path / "h" / "models", tmp_path / "h" / "state", "PET_HOME")
    assert paths.models_dir() == lay.models and paths.state_dir() == lay.state


def test_relative_pet_home_resolves_against_cwd(elsewhere, monkeypatch):
    monkeypatch.setenv("PET_HOME", "h")
    assert paths.models_dir() == elsewhere / "h" / "models"


def test_outside_a_checkout_the_user_data_folder(elsewhere, tmp_path, monkeypatch):
    assert paths.models_dir() == tmp_path / "home" / ".local" / "share" / "pet" / "models"
    assert paths.state_dir() == tmp_path / "home" / ".local" / "share" / "pet" / "state"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.layout().models == tmp_path / "xdg" / "pet" / "models"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")  # the XDG spec says to ignore relative values
    assert paths.layout().models == tmp_path / "home" / ".local" / "share" / "pet" / "models"


def test_checkout_only_when_the_working_directory_is_inside_it(tmp_path, monkeypatch):
    root = fake_checkout(tmp_path / "co", "pet")
    monkeypatch.setattr(paths, "PACKAGE_PARENT", root)
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    lay = paths.layout()
    assert (lay.models, lay.state) == (root / "models", root / ".pet")
    assert lay.rule == f"checkout {root}"
    monkeypatch.chdir(tmp_path)  # beside the checkout, not inside it
    assert paths.layout().rule == "user data folder"


def test_a_folder_of_another_project_is_not_a_checkout(tmp_path, monkeypatch):
    root = fake_checkout(tmp_path / "other", "not-pet")
    monkeypatch.setattr(paths, "PACKAGE_PARENT", root)
    monkeypatch.chdir(root)
    assert paths.source_checkout() is None
    assert paths.layout().rule == "user data folder"
    monkeypatch.setattr(paths, "PACKAGE_PARENT", tmp_path / "site-packages")  # no pyproject at all
    assert paths.source_checkout() is None


def test_this_test_run_is_a_checkout():
    """pytest runs from the repository, so the real package parent is recognised."""
    checkout = paths.source_checkout()
    assert checkout is not None and (checkout / "pet" / "paths.py").is_file()


def test_env_overrides_and_configured_models_dir(elsewhere, tmp_path, monkeypatch):
    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("PET_MODELS_DIR", "m")  # relative: against the working directory
    lay = paths.layout()
    assert lay.models == elsewhere / "m" and lay.state == tmp_path / "h" / "state"
    assert lay.rule == "PET_HOME; PET_MODELS_DIR"
    monkeypatch.setenv("PET_STATE_DIR", str(tmp_path / "s"))
    assert paths.state_dir() == tmp_path / "s"
    # a config's models_dir moves the models and puts the state beside them, whatever the environment says
    assert paths.models_dir(str(tmp_path / "cfg" / "models")) == tmp_path / "cfg" / "models"
    assert paths.state_dir(str(tmp_path / "cfg" / "models")) == tmp_path / "cfg" / ".pet"
    assert paths.resolve_model("x", str(tmp_path / "cfg" / "models")) == tmp_path / "cfg" / "models" / "x"


def test_pinned_paths_reproduce_the_parents_folders_from_any_directory(tmp_path, monkeypatch):
    root = fake_checkout(tmp_path / "co", "pet")
    monkeypatch.setattr(paths, "PACKAGE_PARENT", root)
    monkeypatch.chdir(root)
    pins = paths.pinned_paths()
    monkeypatch.chdir(tmp_path)  # the child's working directory may differ
    for name, value in pins.items():
        monkeypatch.setenv(name, value)
    assert (paths.models_dir(), paths.state_dir()) == (root / "models", root / ".pet")


def test_default_config_is_embedded_when_not_in_a_checkout(tmp_path, monkeypatch):
    import pet.config.loader as loader

    assert default_config_source() == str(loader.DEFAULT_CONFIG)  # in this checkout: the spelled-out file
    monkeypatch.setattr(loader, "source_checkout", lambda: None)
    assert default_config_source() == EMBEDDED_DEFAULTS
    assert load_config(None) == PetConfig()


def test_config_check_without_a_file_names_the_folders(tmp_path, monkeypatch, capsys):
    from pet.cli.main import main

    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert ": valid" in out
    assert str(tmp_path / "h" / "models") in out and str(tmp_path / "h" / "state") in out


def test_help_names_the_folders(tmp_path, monkeypatch):
    from pet.cli.main import build_parser

    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    assert str(tmp_path / "h" / "state") in build_parser().epilog


def test_detached_child_gets_the_parents_folders(tmp_path, monkeypatch, elsewhere):
    """`pet deploy --detach` polls <state>/serve.json: the child it starts must resolve the same state folder and
    import the same pet (-P: no package from the working directory)."""
    import pet.serve.control as control

    seen = {}

    class Exited:
        pid, returncode = 4242, 3

        def poll(self):
            return self.returncode

    def fake_popen(argv, **kw):
        seen.update(argv=argv, env=kw["env"])
        return Exited()

    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    monkeypatch.setattr(control.subprocess, "Popen", fake_popen)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: 1\n")
    with pytest.raises(RuntimeError, match="serve.log"):
        control.spawn_detached(str(cfg), wait_s=5)
    assert seen["argv"][:4] == [sys.executable, "-P", "-m", "pet"]
    assert seen["env"]["PET_STATE_DIR"] == str(tmp_path / "h" / "state")
    assert seen["env"]["PET_MODELS_DIR"] == str(tmp_path / "h" / "models")
    assert (tmp_path / "h" / "state" / "serve.log").is_file()


def test_shutdown_without_a_record_names_where_it_looked(tmp_path, monkeypatch):
    import pet.serve.control as control

    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    with pytest.raises(RuntimeError, match=re.escape(str(tmp_path / "h" / "state" / "serve.json"))):
        control.shutdown()


def test_a_pet_package_in_the_working_directory_does_not_shadow_ours(tmp_path):
    """The bug behind a `pet deploy --detach` that never returned: run from a second checkout, `python -m pet`
    imported that checkout's package, which recorded the deployment in its own folder. `-P` (what
    spawn_detached uses) imports the installed pet."""
    import subprocess

    import pet

    shadow = tmp_path / "other-checkout" / "pet"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text("print('the other checkout')\n")
    run = [sys.executable, "-m", "pet", "--version"]
    plain = subprocess.run(run, cwd=shadow.parent, capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "the other checkout"
    safe = subprocess.run(run[:1] + ["-P"] + run[1:], cwd=shadow.parent, capture_output=True, text=True, timeout=60)
    assert safe.returncode == 0 and safe.stdout.strip() == f"pet {pet.__version__}"
