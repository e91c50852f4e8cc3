"""pet installed from its wheel, not run from the checkout: folders follow the user.

A module fixture builds the wheel from a copy of the sources, installs it into a fresh virtual environment
(``--no-deps --no-index``: the dependencies come from the project's own environment through a ``.pth`` line, so
nothing is downloaded) and checks that ``pet`` there is the installed copy. Every command runs from an unrelated
working directory with ``PET_HOME`` set. Building and installing take about 10 s; only ``pet models prepare``
(the GGUF conversion, about 40 s) loads real weights and is marked ``real``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md")  # what the build reads besides the package


@dataclass
class Installed:
    """A fresh environment with the wheel installed, a PET_HOME and an unrelated working directory."""

    wheel: Path
    src: Path
    venv: Path
    home: Path
    cwd: Path

    def pet(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PET_MODELS_DIR", "PET_STATE_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
        env |= {"PET_HOME": str(self.home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return subprocess.run([str(self.venv / "bin" / "pet"), *args], cwd=self.cwd, env=env, text=True,
                              capture_output=True, timeout=timeout)


def _run(argv: list[str], **kw) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"  # build from a copy, so the checkout gets no build/ or egg-info from this test
    shutil.copytree(REPO / "pet", src / "pet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    # --no-build-isolation: the backend (setuptools>=77) is already in the environment, torch requires it
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"),
          str(src)])
    (wheel,) = (root / "dist").glob("pet-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    purelib = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    # The project environment's packages (torch, ray, pip, ...) without re-downloading them. A path line in a .pth
    # file does not run the .pth files found there, so the checkout's editable `pet` finder stays out.
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (purelib / "project_deps.pth").write_text("\n".join(deps) + "\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", str(wheel)])

    cwd, home = root / "elsewhere", root / "pet-home"
    cwd.mkdir()
    yield Installed(wheel, src, venv, home, cwd)
    shutil.rmtree(root, ignore_errors=True)  # the prepared model is 538 MB: do not leave it to pytest's tmp rotation


def test_the_installed_copy_is_imported(installed):
    proc = subprocess.run([str(installed.venv / "bin" / "python"), "-c", "import pet, pet.paths as p; "
                           "print(pet.__file__); print(p.source_checkout())"],
                          cwd=installed.cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    where, checkout = proc.stdout.split("\n")[:2]
    assert Path(where).is_relative_to(installed.venv), where
    assert checkout == "None"  # site-packages is no checkout


def test_the_wheel_carries_every_package_file(installed):
    """A data file beside the code (a YAML, a JSON) is read at run time: it must be listed in pyproject's
    package-data, or an installed pet cannot find it."""
    with zipfile.ZipFile(installed.wheel) as whl:
        shipped = {n for n in whl.namelist() if n.startswith("pet/")}
    sources = {p.relative_to(installed.src).as_posix() for p in (installed.src / "pet").rglob("*") if p.is_file()}
    assert sorted(sources - shipped) == []


def test_help(installed):
    proc = installed.pet("--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "deploy" in text and "models" in text
    assert "(PET_HOME)" in text


def test_config_check_without_a_file_uses_the_embedded_defaults(installed):
    proc = installed.pet("config", "check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("<embedded defaults>: valid")
    assert f"models_dir     {installed.home / 'models'}" in proc.stdout
    assert f"state_dir      {installed.home / 'state'}" in proc.stdout


def test_config_check_with_a_file_resolves_relative_paths_against_the_working_directory(installed):
    (installed.cwd / "mine.yaml").write_text("version: 1\nmodels_dir: my-models\nserve:\n  http:\n    port: 8123\n")
    proc = installed.pet("config", "check", "mine.yaml")
    assert proc.returncode == 0, proc.stderr
    assert f"models_dir     {installed.cwd / 'my-models'}" in proc.stdout
    assert "127.0.0.1:8123" in proc.stdout
    bad = installed.pet("config", "check", "missing.yaml")
    assert bad.returncode == 2 and "missing.yaml: file does not exist" in bad.stderr


@pytest.mark.real
def test_models_prepare_goes_to_pet_home(installed):
    proc = installed.pet("models", "prepare", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models = installed.home / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= set(manifest["models"])
    assert (models / "smollm2-135m-instruct" / "config.json").is_file()
    assert sorted(p.name for p in installed.cwd.iterdir()) in ([], ["mine.yaml"])  # nothing beside the user
    check = installed.pet("config", "check")
    assert "smollm2-135m-instruct [ready]" in check.stdout
