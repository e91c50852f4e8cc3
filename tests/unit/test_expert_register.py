"""``pet expert register|list|show|remove`` end to end on the tiny random Llama (a few training steps).

Every bad input must exit 2 with a message naming the problem and leave the registry byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pet.cli.main import main
from pet.expert.registry import CorruptAdapterError, ExpertRegistry

REPO = Path(__file__).resolve().parents[2]
LINES = [
    "def add(a, b): return a + b  # python functions return values",
    "import os, sys; print(sys.argv) lists the command line arguments.",
    "for item in items: print(item)  # a python for loop over a list",
    "with open(path) as f: text = f.read()  # read a whole file",
]


def snapshot(root: Path) -> dict[str, bytes]:
    """Visible registry files and their bytes."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def write_config(path: Path, tiny_lm_dir: Path, registry: Path, **training) -> Path:
    cfg = {
        "traditional": {"model": str(tiny_lm_dir)},
        "expert": {
            "base_model": str(tiny_lm_dir), "registry_dir": str(registry),
            "training": {"steps": 8, "batch_size": 2, "max_seq_len": 64, "learning_rate": 0.01, "warmup_steps": 1,
                         "max_heldout": 4, "heldout_fraction": 0.25, "time_budget_s": 60, **training},
            "data": {"chunk_chars": 150, "max_data_bytes": 20_000, "max_exemplars": 5, "synth_max_new_tokens": 16},
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_lm_dir):
    root = tmp_path_factory.mktemp("expert-cli")
    data = root / "py.txt"
    data.write_text("\n\n".join(LINES[i % 4] + f" {i}" for i in range(40)))
    queries = root / "queries.txt"
    queries.write_text("How do I read a file in python?\nWhat does sys.argv hold?\n")
    cfg = write_config(root / "cfg.yaml", tiny_lm_dir, root / "experts")
    return {"root": root, "data": data, "queries": queries, "cfg": cfg, "reg": ExpertRegistry(root / "experts")}


def run(*argv: str) -> int:
    return main(["expert", *argv])


@pytest.fixture(scope="module")
def registered(env):
    rc = run("register", "python", "--data", str(env["data"]), "--examples", str(env["queries"]),
             "--config", str(env["cfg"]), "--no-progress")
    assert rc == 0
    return env["reg"].get("python")


def test_register_trains_an_adapter_that_beats_the_base(registered, env, tiny_lm_dir):
    m = registered.metrics
    assert m["ppl_expert"] < m["ppl_base"] and m["ppl_gain"] > 0 and m["steps"] == 8
    assert m["heldout_samples"] == 4 and m["train_samples"] > 0 and m["forced"] is False
    mf = registered.manifest
    assert mf["base_model"] == str(tiny_lm_dir) and len(mf["data_sha256"]) == 64
    # The 2 example queries plus up to max_exemplars=5 snippets sampled from the training data.
    assert mf["exemplar_source"] == "examples+data" and registered.exemplar_count == 7
    ex = env["reg"].exemplars("python")
    assert ex.shape == (7, 384) and np.allclose(np.linalg.norm(ex, axis=1), 1, atol=1e-4)  # MiniLM, normalised
    # The adapter is a real PEFT folder that changes the base model's output.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        before = base(input_ids=ids).logits
        expert = PeftModel.from_pretrained(base, env["reg"].adapter_dir("python"))
        after = expert(input_ids=ids).logits
    assert not torch.allclose(before, after)


def test_list_and_show(registered, env, capsys):
    capsys.readouterr()
    assert run("list", "--config", str(env["cfg"])) == 0
    out = capsys.readouterr().out
    assert "python" in out and "ppl base" in out
    assert run("show", "python", "--config", str(env["cfg"])) == 0
    out = capsys.readouterr().out
    assert "exemplars     7 (from examples+data)" in out and "integrity     ok" in out and "perplexity    base" in out
    assert run("show", "python", "--json", "--config", str(env["cfg"])) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "python"


@pytest.mark.parametrize("case", ["empty", "non_utf8", "oversized", "bad_name", "exists", "missing", "bad_examples",
                                  "bad_jsonl", "negative_synth"])
def test_bad_input_exits_2_and_changes_nothing(registered, env, case, capsys):
    root = env["root"]
    data, name, extra = env["data"], "newdomain", []
    expect = {
        "empty": "is empty", "non_utf8": "not UTF-8", "oversized": "the limit is 20,000", "bad_name": "not a slug",
        "exists": "already exists; pass --replace", "missing": "does not exist", "bad_examples": "examples file",
        "bad_jsonl": "bad.jsonl:2: not valid JSON", "negative_synth": "--synthesize must be >= 0",
    }[case]
    if case == "empty":
        data = root / "empty.txt"
        data.write_text("")
    elif case == "non_utf8":
        data = root / "latin1.txt"
        data.write_bytes("café crème\n\n".encode("latin-1") * 20)
    elif case == "oversized":
        data = root / "big.txt"
        data.write_text("word " * 5000)
    elif case == "bad_name":
        name = "Not A Slug"
    elif case == "exists":
        name = "python"
    elif case == "missing":
        data = root / "nope.txt"
    elif case == "bad_examples":
        (root / "ex.txt").write_bytes(b"\xff\xfe")
        extra = ["--examples", str(root / "ex.txt")]
    elif case == "bad_jsonl":
        data = root / "bad.jsonl"
        data.write_text('{"text": "fine"}\n{oops\n')
    elif case == "negative_synth":
        extra = ["--synthesize", "-1"]
    before = snapshot(env["reg"].root)
    capsys.readouterr()
    rc = run("register", name, "--data", str(data), "--config", str(env["cfg"]), "--no-progress", *extra)
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "Traceback" not in err
    assert snapshot(env["reg"].root) == before


def test_no_improvement_is_refused_unless_forced(registered, env, tiny_lm_dir, capsys):
    cfg = write_config(env["root"] / "lazy.yaml", tiny_lm_dir, env["reg"].root, learning_rate=1e-9, steps=1,
                       min_ppl_gain=0.05)
    before = snapshot(env["reg"].root)
    rc = run("register", "lazy", "--data", str(env["data"]), "--config", str(cfg), "--no-progress")
    assert rc == 2 and "does not improve on the base" in capsys.readouterr().err
    assert snapshot(env["reg"].root) == before
    assert run("register", "lazy", "--data", str(env["data"]), "--config", str(cfg), "--no-progress", "--force") == 0
    rec = env["reg"].get("lazy")
    assert rec.metrics["forced"] is True and rec.manifest["exemplar_source"] == "data"
    assert 0 < rec.exemplar_count <= 5  # sampled from the data, capped by max_exemplars
    assert run("remove", "lazy", "--config", str(cfg)) == 0 and "lazy" not in env["reg"].names()
    assert run("remove", "lazy", "--config", str(cfg)) == 2


def test_replace_and_synthesize_with_t(registered, env, capsys):
    fp = registered.fingerprint
    rc = run("register", "python", "--data", str(env["data"]), "--config", str(env["cfg"]), "--no-progress",
             "--replace", "--synthesize", "2", "--steps", "3")
    assert rc == 0
    rec = env["reg"].get("python")
    assert rec.fingerprint != fp and rec.metrics["steps"] == 3
    synth = rec.manifest["synthesis"]
    assert synth["requested"] == 2 and synth["generated"] >= 4 and synth["kept"] <= 2


def test_corrupted_adapter_is_refused(registered, env, capsys):
    reg = env["reg"]
    weights = reg.get("python").path / "adapter" / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CorruptAdapterError, match="sha256 mismatch"):
        reg.adapter_dir("python")
    capsys.readouterr()
    assert run("show", "python", "--config", str(env["cfg"])) == 1
    assert "integrity     FAILED" in capsys.readouterr().out
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert reg.adapter_dir("python").is_dir()


def test_register_killed_during_training_leaves_registry_unchanged(registered, env):
    before = snapshot(env["reg"].root)
    cfg = env["cfg"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pet", "expert", "register", "slowpoke", "--data", str(env["data"]), "--config",
         str(cfg), "--no-progress", "--steps", "100000", "--time-budget", "600"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for line in proc.stdout:  # wait until training has started
            if "step " in line or "base perplexity" in line:
                break
        else:
            pytest.fail("register ended before training started")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -9
    assert "slowpoke" not in env["reg"].names() and snapshot(env["reg"].root) == before


def test_contributor_is_credited_once_per_adapter(registered, env, capsys):
    from pet.config.loader import load_config
    from pet.ledger import Ledger

    cfg_path = env["root"] / "cfg-ledger.yaml"
    raw = yaml.safe_load(env["cfg"].read_text())
    raw["ledger"] = {"path": str(env["root"] / "ledger.sqlite")}
    cfg_path.write_text(yaml.safe_dump(raw))
    argv = ["register", "credited", "--data", str(env["data"]), "--config", str(cfg_path), "--no-progress",
            "--steps", "2", "--force", "--contributor", "alice"]
    assert run(*argv) == 0
    assert "credited to 'alice'" in capsys.readouterr().out
    led = Ledger.from_config(load_config(cfg_path))
    try:
        rewards = [e for e in led.events() if e["kind"] == "reward"]
        assert len(rewards) == 1 and rewards[0]["user"] == "alice" and rewards[0]["tier"] == "e"
        assert rewards[0]["samples"] == env["reg"].get("credited").metrics["train_samples"]
        assert rewards[0]["purpose"] == "expert_training:credited" and rewards[0]["amount"] > 0
    finally:
        led.close()
    env["reg"].remove("credited")


def test_distill_with_the_registered_expert_as_domain_teacher(registered, env, tmp_path, capsys):
    """`pet distill --domain-teacher NAME=DATA` with a real registered adapter; data the expert was not
    registered with, or an unknown expert, exit 2 naming the problem before any training."""
    common = ["distill", "--teacher", "t", "--config", str(env["cfg"]), "--student-layers", "2", "--steps", "2",
              "--batch-size", "2", "--seq-len", "24", "--teacher-samples", "2", "--eval-texts", "4",
              "--threads", "1", "--domain-share", "0.5"]
    out = tmp_path / "p"
    assert main([*common, "--domain-teacher", f"python={env['data']}", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["domain_teacher"] == "expert:python" and report["domain_share"] == 0.5
    assert report["domain_tokens"] > 24 and (out / "model" / "config.json").is_file()

    other = tmp_path / "other.txt"
    other.write_text(env["data"].read_text() + "\n\nOne more paragraph the expert never saw.")
    capsys.readouterr()
    assert main([*common, "--domain-teacher", f"python={other}", "--out", str(tmp_path / "q")]) == 2
    assert "not the data expert 'python' was registered with" in capsys.readouterr().err
    assert main([*common, "--domain-teacher", f"finance={env['data']}", "--out", str(tmp_path / "r")]) == 2
    assert "finance" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()
