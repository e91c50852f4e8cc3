"""Security of `pet`: HPKE-encrypted envelopes between devices and the gateway, the key service, signed bundles.

- :mod:`pet.security.envelope`: the envelope wire format and the device side (``DeviceCrypto``); it loads no
  server state.
- :mod:`pet.security.gateway`: the gateway side (``GatewayCrypto``: opens requests, seals replies).
- :mod:`pet.security.keys`: the keys folder, rotation with a grace period, ``ensure_keys(cfg)``.
- :mod:`pet.personal.bundle.sign`: Ed25519 ``sign_bundle`` / ``verify_bundle`` for device bundles.
- :mod:`pet.security.replay`: bounded replay refusal; :mod:`pet.security.metrics`: rejection counters.

See docs/security.md for the protocol and the threat model.
"""
