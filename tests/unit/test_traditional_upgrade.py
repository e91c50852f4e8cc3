"""``pet traditional upgrade|list|use|rollback`` and experts after an upgrade, on the tiny random Llama.

Two experts are registered for real (a few LoRA steps each); the upgrade merges them with peft, gates the merged
T on their held-out texts and on general text, and writes a version folder. Every refusal exits 2, says why, and
writes nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from pet.cli.main import main
from pet.config.loader import load_config
from pet.config.schema.tiers import TraditionalUpgradeConfig
from pet.expert.registry import BaseMismatchError, ExpertRegistry, check_base
from pet.serve.dispatch import fallback_reason
from pet.traditional import upgrade as tu
from pet.traditional.upgrade import GENERAL, ExpertSource, Parent, UpgradeError, check_request, gate
from pet.traditional.versions import T_MANIFEST, in_force, list_versions, model_fingerprint, versions_root

PY = ["def add(a, b): return a + b  # python functions return values",
      "import os, sys; print(sys.argv) lists the command line arguments.",
      "for item in items: print(item)  # a python for loop over a list",
      "with open(path) as f: text = f.read()  # read a whole file"]
CHAT = [("Hello! How are you today?", "I am fine, thank you very much."),
        ("What did you do on the weekend?", "I went hiking with my dog and then we ate pizza."),
        ("Do you like music?", "Yes, I listen to jazz every evening."),
        ("Where do you live?", "I live in a small town near the sea.")]


def write_cfg(root: Path, tiny: Path, **upgrade) -> Path:
    cfg = {
        "models_dir": str(root / "models"),
        "traditional": {"model": str(tiny), "upgrade": {"eval_samples": 4, "max_seq_len": 64,
                                                        "general_data": str(root / "general.txt"), **upgrade}},
        "expert": {"base_model": str(tiny), "registry_dir": str(root / "experts"),
                   "training": {"steps": 10, "batch_size": 2, "max_seq_len": 64, "learning_rate": 0.01,
                                "warmup_steps": 1, "max_heldout": 4, "heldout_fraction": 0.25, "time_budget_s": 60},
                   "data": {"chunk_chars": 150, "max_data_bytes": 50_000, "max_exemplars": 3}},
    }
    path = root / f"cfg-{len(list(root.glob('cfg-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_lm_dir):
    root = tmp_path_factory.mktemp("t-upgrade")
    (root / "py.txt").write_text("\n\n".join(PY[i % 4] + f" {i}" for i in range(40)))
    (root / "chat.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n"
                                             for i in range(10) for p, r in CHAT))
    (root / "general.txt").write_text("\n\n".join(
        f"The capital of country {i} is a large city. Stocks and bonds are financial assets." for i in range(8)))
    cfg = write_cfg(root, tiny_lm_dir)
    for name, data in (("python", "py.txt"), ("chat", "chat.jsonl")):
        assert main(["expert", "register", name, "--data", str(root / data), "--config", str(cfg),
                     "--no-progress"]) == 0
    data = ["--data", f"python={root / 'py.txt'}", "--data", f"chat={root / 'chat.jsonl'}"]
    return {"root": root, "cfg": cfg, "data": data, "reg": ExpertRegistry(root / "experts"), "tiny": tiny_lm_dir}


def upgrade(env, *extra: str, cfg: Path | None = None) -> int:
    return main(["traditional", "upgrade", "--experts", "python,chat", *env["data"], "--config",
                 str(cfg or env["cfg"]), *extra])


def versions(env) -> list[str]:
    return [v.name for v in list_versions(env["root"] / "models" / "traditional")]


# ----------------------------------------------------------------------------------------------------------------
# The gate and the request checks, without a model


def test_gate_passes_gains_and_refuses_losses_naming_the_margin():
    ucfg = TraditionalUpgradeConfig()  # general loss at most 2 %, domains must gain
    table, failures = gate({"python": 10.0, GENERAL: 20.0}, {"python": 8.0, GENERAL: 20.3}, ucfg)
    assert failures == [] and table["python"]["change"] == pytest.approx(-0.2)
    table, failures = gate({"python": 10.0, GENERAL: 20.0}, {"python": 10.5, GENERAL: 21.0}, ucfg)
    assert len(failures) == 2
    assert "domain 'python'" in failures[0] and "gain -5.0%" in failures[0] and "short by 5.0%" in failures[0]
    assert "general text" in failures[1] and "+5.0%" in failures[1] and "over by 3.0%" in failures[1]


def test_request_checks_refuse_bad_input_before_any_model(tmp_path):
    parent = Parent("t", tmp_path, "f" * 16)
    a, b = (ExpertSource(n, tmp_path, "x", "f" * 16) for n in ("a", "b"))
    sets = {"a": ["text"], "b": ["text"], GENERAL: ["text"]}
    assert check_request(parent, [a, b], None, "ties", sets)[1] == [1.0, 1.0]
    for experts, weights, method, sets_, words in [
        ([], None, "ties", sets, "no experts"),
        ([a, b], None, "average", sets, "unknown merge method 'average'"),
        ([a, b], [1.0], "ties", sets, "1 weights for 2 experts"),
        ([a, b], [1.0, -1.0], "linear", sets, "finite and > 0"),
        ([a, b], [1.0, math.nan], "linear", sets, "finite and > 0"),
        ([a, a], None, "ties", sets, "named twice"),
        ([a, b], None, "ties", {"a": ["t"], GENERAL: []}, "no held-out texts for: b, general"),
    ]:
        with pytest.raises(UpgradeError, match=words):
            check_request(parent, experts, weights, method, sets_)
    other = ExpertSource("c", tmp_path, "x", "0" * 16)
    with pytest.raises(tu.BaseMismatchError, match="pet expert register c --rebase"):
        check_request(parent, [a, other], None, "ties", None)


# ----------------------------------------------------------------------------------------------------------------
# The command


def test_bad_input_exits_2_and_writes_nothing(env, capsys):
    for extra, words in [
        (["--method", "average"], "unknown merge method"),
        (["--weights", "1,x"], "'x' is not a number"),
        (["--weights", "1,1,1"], "3 weights for 2 experts"),
        (["--data", "nosuch=/x"], "--data names experts that are not merged: nosuch"),
    ]:
        capsys.readouterr()
        assert upgrade(env, *extra) == 2, extra
        assert words in capsys.readouterr().err
    capsys.readouterr()
    assert main(["traditional", "upgrade", "--experts", "python,nosuch", "--config", str(env["cfg"])]) == 2
    assert "unknown expert domain 'nosuch'" in capsys.readouterr().err
    assert versions(env) == []


def test_gate_refusal_exits_2_says_which_check_and_writes_nothing(env, capsys):
    strict = write_cfg(env["root"], env["tiny"], min_domain_gain=0.99, max_general_loss=0.0)
    capsys.readouterr()
    assert upgrade(env, cfg=strict) == 2
    err = capsys.readouterr().err
    assert "refused; nothing written" in err and "domain 'python'" in err and "required > 99.0%" in err
    assert "--force" in err
    assert versions(env) == [] and not list((env["root"] / "models" / "traditional").glob(".*"))


@pytest.fixture(scope="module")
def merged(env):
    lenient = write_cfg(env["root"], env["tiny"], max_general_loss=0.9)
    parent_files = {p.name: p.stat().st_mtime_ns for p in env["tiny"].iterdir()}
    assert upgrade(env, "--method", "ties", cfg=lenient) == 0
    assert {p.name: p.stat().st_mtime_ns for p in env["tiny"].iterdir()} == parent_files  # the parent untouched
    return list_versions(versions_root(str(env["root"] / "models")))[-1]


def test_accepted_upgrade_writes_a_version_with_its_manifest(merged, env):
    m = merged.manifest
    assert merged.name == f"{env['tiny'].name}-v1" and (merged.path / T_MANIFEST).is_file()
    assert m["parent"] == {"name": str(env["tiny"]), "fingerprint": model_fingerprint(env["tiny"])}
    reg = env["reg"]
    assert [(e["name"], e["fingerprint"]) for e in m["experts"]] == [(n, reg.get(n).fingerprint)
                                                                     for n in ("python", "chat")]
    assert m["method"] == "ties" and m["weights"] == [1.0, 1.0] and m["density"] == 0.5 and m["gate"]["passed"]
    assert set(m["evaluation"]) == {"python", "chat", GENERAL}
    assert all(row["merged"] < row["parent"] for k, row in m["evaluation"].items() if k != GENERAL)
    assert m["fingerprint"] == model_fingerprint(merged.path) != model_fingerprint(env["tiny"])
    assert "model.safetensors" in m["files"] and "config.json" in m["files"]
    from pet.models.lm import CausalLM

    assert CausalLM.load(merged.path).generate("hi", max_new_tokens=2).usage.completion_tokens >= 1


def test_force_writes_past_the_gate_as_the_next_version(merged, env, capsys):
    strict = write_cfg(env["root"], env["tiny"], min_domain_gain=0.99)
    capsys.readouterr()
    assert upgrade(env, "--method", "linear", "--weights", "1,0.5", "--force", cfg=strict) == 0
    assert "FORCED past the gate" in capsys.readouterr().out
    v2 = list_versions(env["root"] / "models" / "traditional")[-1]
    assert v2.name.endswith("-v2") and v2.manifest["gate"]["forced"] is True and v2.manifest["gate"]["failures"]
    assert (v2.manifest["method"], v2.manifest["weights"], v2.manifest["density"]) == ("linear", [1.0, 0.5], None)
    assert merged.manifest == json.loads((merged.path / T_MANIFEST).read_text())  # v1 unchanged


def test_base_mismatch_is_refused_with_the_fix(env, capsys):
    rec = env["reg"].get("chat")
    mf = rec.path / "manifest.json"
    original = mf.read_text()
    mf.write_text(json.dumps({**json.loads(original), "base_fingerprint": "0" * 16}))
    try:
        capsys.readouterr()
        assert upgrade(env) == 2
        err = capsys.readouterr().err
        assert "expert 'chat' was trained on a T with fingerprint 0000000000000000" in err and "--rebase" in err
        with pytest.raises(BaseMismatchError, match="--rebase"):
            check_base(env["reg"].get("chat"), model_fingerprint(env["tiny"]), "tiny")
    finally:
        mf.write_text(original)
    check_base(env["reg"].get("chat"), model_fingerprint(env["tiny"]), "tiny")  # matching: no error
    assert fallback_reason(BaseMismatchError("x")) == "base_mismatch"


# ----------------------------------------------------------------------------------------------------------------
# Versions in force, and experts after an upgrade


def test_list_use_rollback(merged, env, capsys):
    cfg = load_config(env["cfg"])
    assert in_force(cfg).source == "config"
    capsys.readouterr()
    assert main(["traditional", "list", "--config", str(env["cfg"])]) == 0
    out = capsys.readouterr().out
    assert merged.name in out and "ties" in out and "python,chat" in out
    assert main(["traditional", "use", merged.name, "--config", str(env["cfg"])]) == 0
    t = in_force(cfg)
    assert (t.name, t.path, t.source) == (merged.name, merged.path, "state")
    state = json.loads((env["root"] / ".pet" / "traditional.json").read_text())
    assert state == {"current": merged.name, "history": [str(env["tiny"])]}
    from pet.traditional.versions import describe, pin_in_force

    assert describe(cfg)["experts"] == ["python", "chat"]
    pinned = pin_in_force(cfg)
    assert pinned.traditional.model == pinned.expert.base_model == merged.name
    assert main(["traditional", "use", "nosuch-v9", "--config", str(env["cfg"])]) == 2
    assert "unknown T version 'nosuch-v9'" in capsys.readouterr().err
    assert main(["traditional", "rollback", "--config", str(env["cfg"])]) == 0
    assert in_force(cfg).name == str(env["tiny"])
    capsys.readouterr()
    assert main(["traditional", "rollback", "--config", str(env["cfg"])]) == 2
    assert "no earlier T version" in capsys.readouterr().err


def test_rebase_retrains_an_expert_on_the_version_in_force(merged, env, capsys):
    cfg = env["cfg"]
    assert main(["traditional", "use", merged.name, "--config", str(cfg)]) == 0
    try:
        with pytest.raises(BaseMismatchError):  # what the pool checks before it applies an adapter
            check_base(env["reg"].get("python"), merged.fingerprint, merged.name)
        capsys.readouterr()
        assert main(["expert", "register", "chat", "--rebase", "--config", str(cfg), "--no-progress"]) == 2
        assert "expert 'chat' has no recipe" in capsys.readouterr().err
        assert main(["expert", "register", "python", "--rebase", "--data", str(env["root"] / "py.txt"),
                     "--config", str(cfg), "--no-progress"]) == 0
        rec = env["reg"].get("python")
        assert rec.manifest["base_fingerprint"] == merged.fingerprint and rec.base_model == merged.name
        check_base(rec, merged.fingerprint, merged.name)
        capsys.readouterr()
        assert main(["expert", "register", "python", "--rebase", "--data", str(env["root"] / "py.txt"),
                     "--config", str(cfg), "--no-progress"]) == 0
        assert "nothing to do" in capsys.readouterr().out
    finally:
        assert main(["traditional", "rollback", "--config", str(cfg)]) == 0


# ----------------------------------------------------------------------------------------------------------------
# Rollout plumbing (the Ray side is tests/integration/test_t_rollout.py)


def test_sighup_reloads_a_blocking_deploy_and_sigterm_stops_it():
    import os
    import signal
    import threading
    import time

    from pet.serve.control import block_until_signal

    calls: list[str] = []

    def signals() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(1.2)
        os.kill(os.getpid(), signal.SIGTERM)

    old = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    threading.Thread(target=signals, daemon=True).start()
    try:
        block_until_signal(lambda: calls.append("stop"), on_reload=lambda: calls.append("reload"))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert calls == ["reload", "stop"]


def test_rollout_without_a_running_deployment_is_a_clear_error(env, monkeypatch, capsys):
    monkeypatch.setenv("PET_STATE_DIR", str(env["root"] / "no-deployment"))
    capsys.readouterr()
    assert main(["traditional", "use", str(env["tiny"]), "--rollout", "--config", str(env["cfg"])]) == 2
    assert "no running deployment is recorded" in capsys.readouterr().err
