"""Unit-test fixtures shared by every module here: a session bundle-signing key, so that bundles exported in
tests are signed (``pet export`` signs by default) and the device runtime trusts them, without touching the
repository's own ``.pet/keys``."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def bundle_signing_keys(tmp_path_factory):
    """A keys folder with only a signing key; ``$PET_BUNDLE_SIGNING_KEY`` / ``$PET_BUNDLE_PUBLIC_KEY`` point at it."""
    from pet.security.keys import KeyRing

    ring = KeyRing(tmp_path_factory.mktemp("bundle-keys") / "keys")
    ring.ensure_signing_key()
    names = ("PET_BUNDLE_SIGNING_KEY", "PET_BUNDLE_PUBLIC_KEY")
    old = {n: os.environ.get(n) for n in names}
    os.environ["PET_BUNDLE_SIGNING_KEY"] = str(ring.root)
    os.environ["PET_BUNDLE_PUBLIC_KEY"] = str(ring.signing_public_key_path())
    yield ring
    for n, v in old.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v
