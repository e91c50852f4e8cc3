"""The canary test of issue 8: a full P -> E -> T session, plus shared personal data, with a unique canary string,
then the canary must appear in no log file, no metrics output and no HTTP body that leaves the device.

P runs on the "device" (this process) from a tiny signed bundle with onnxruntime; E and T run on the real Serve
graph behind encrypted envelopes; the personal data goes to ``POST /v1/augment`` through the personalisation
helper's HTTP client. Every HTTP request the device makes goes through one httpx client whose hook records the
exact bytes on the wire (URL and body). Afterwards we scan: those bytes, the responses, ``GET /metrics``, every
file under Ray's log folder of this session, every file under the test's serve folder (keys, registry, ledger),
and the device-side Python log records.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def _ray_logs_dir() -> Path:
    """The log folder of the Ray session this test process started (not another job's session_latest)."""
    try:
        import ray._private.worker as worker

        node = worker._global_node
        if node is not None:
            return Path(node.get_logs_dir_path())
    except (ImportError, AttributeError):
        pass
    return Path("/tmp/ray/session_latest/logs")


def _files_containing(root: Path, needle: bytes) -> tuple[list[str], int]:
    """Files below ``root`` whose bytes contain ``needle``, and how many files were scanned."""
    hits, scanned = [], 0
    for p in root.rglob("*"):
        try:
            if not p.is_file() or p.is_symlink():
                continue
            data = p.read_bytes()
        except OSError:
            continue
        scanned += 1
        if needle in data:
            hits.append(str(p))
    return hits, scanned


@pytest.fixture(scope="module")
def signed_tiny_bundle(tmp_path_factory, tiny_lm_dir, serve_config):
    """A tiny P bundle exported with the device helper's exporter and signed with the cloud's signing key."""
    from pet.personal.bundle.sign import sign_bundle
    from pet.personal.bundle.write import export_bundle
    from pet.security.keys import KeyRing, keys_dir_for

    out = tmp_path_factory.mktemp("canary") / "bundle"
    export_bundle(tiny_lm_dir, out, quantize="none", tier="P")
    ring = KeyRing(keys_dir_for(serve_config))
    sign_bundle(out, ring)
    return out, ring.signing_public_key_path()


def test_canary_never_leaves_the_device_in_clear(serve_url, serve_config, signed_tiny_bundle, caplog):
    from pet.client import GatewayClient
    from pet.personal.personalize.client import HttpAugmentClient
    from pet.personal.runtime import DeviceModel
    from pet.security.envelope import DeviceCrypto

    canary = f"CANARY{uuid.uuid4().hex}"
    needle = canary.encode()
    caplog.set_level(logging.DEBUG)
    wire: list[bytes] = []

    def record(request: httpx.Request) -> None:
        wire.append(str(request.url).encode() + b"\n" + bytes(request.content))

    http = httpx.Client(timeout=600, event_hooks={"request": [record]})
    prompt = f"My locker code is {canary}. Can you remind me how to write a for loop in Python?"

    # P: on the device, from the signed bundle (nothing crosses the network)
    bundle, pub = signed_tiny_bundle
    p_model = DeviceModel.load(bundle, num_threads=1, public_key=pub)
    p_gen = p_model.generate([{"role": "user", "content": prompt}], max_new_tokens=4)
    assert p_gen.usage.completion_tokens >= 1 and not wire

    # E then T: encrypted requests to the real gateway
    keys = http.get(f"{serve_url}/v1/keys").json()
    dev = DeviceCrypto(keys, "canary-user")
    answers = {}
    for tier, extra in (("e", {"domain": "python"}), ("t", {})):
        env, pending = dev.seal({"prompt": prompt, "tier": tier, "max_new_tokens": 6, **extra})
        r = http.post(f"{serve_url}/v1/generate", json={"pet_envelope": env})
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"pet_envelope"} and needle not in r.content
        answers[tier] = pending.open(r.json()["pet_envelope"])
        assert answers[tier]["tier"] == tier and answers[tier]["usage"]["prompt_tokens"] > 20
    assert answers["e"]["domain"] == "python"

    # personal data shared for augmentation: encrypted through the device's one send path
    gateway = GatewayClient(serve_url, "canary-user", read_timeout_s=600)
    send = gateway.transport.send

    def recorded_send(method: str, path: str, data: bytes | None = None):
        wire.append(f"{serve_url}{path}".encode() + b"\n" + (data or b""))
        return send(method, path, data)

    gateway.transport.send = recorded_send
    client = HttpAugmentClient(serve_url, "canary-user", gateway=gateway)
    seen_plain: list[dict] = []
    client.on_send.append(seen_plain.append)
    shared = [f"Remember that {canary} opens the blue locker at the gym.", "I usually train on Tuesday nights."]
    result = client.request({"shared": shared, "n": 1, "seed": 0})
    assert isinstance(result["samples"], list)
    assert needle in repr(seen_plain).encode()  # control: the canary really was in what the device sent

    # what left the device: every request body and URL, all encrypted
    assert len(wire) >= 5
    assert all(needle not in body for body in wire)
    assert sum(b"pet_envelope" in body for body in wire) == 3

    # metrics of the gateway
    metrics = http.get(f"{serve_url}/metrics")
    assert metrics.status_code == 200 and b"pet_envelope" in metrics.content
    assert needle not in metrics.content

    # logs: let Ray's log monitors flush, then scan every file of this Ray session and of the serve folder
    time.sleep(3)
    logs = _ray_logs_dir()
    hits, scanned = _files_containing(logs, needle)
    assert scanned > 5, f"expected Ray log files under {logs}"
    assert hits == []
    serve_root = Path(serve_config.expert.registry_dir).parent
    hits, scanned = _files_containing(serve_root, needle)
    assert scanned > 0 and hits == []
    ledger = Path(serve_config.ledger.path) if serve_config.ledger.path else None
    if ledger is None:
        from pet.ledger.ledger import default_ledger_path

        ledger = default_ledger_path(serve_config.models_dir)
    for p in (ledger, ledger.with_name(ledger.name + "-wal")):
        assert not p.is_file() or needle not in p.read_bytes()
    # device-side Python logging (the augment client logs counts, never text)
    assert caplog.records and canary not in caplog.text
