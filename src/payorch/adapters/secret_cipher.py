"""Secrets at rest: AES-256-GCM under operator keys, each value bound to its row.

A sealed value reads `enc1:<key id>:<base64url of nonce + ciphertext + tag>`. The key
id says which key sealed it, so keys can rotate: every configured key opens, the first
one seals. The associated data names the table, column and row (`context`), so a
value copied into another row or column does not open. A stored value without the
`enc1:` marker is one written before encryption (plain text), read as it is until
`payorch secrets reencrypt` seals it: the values sealed here (base64 webhook signing
keys) never hold a colon, so neither kind can pass for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MARKER = "enc1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# Short: a sealed 44-character signing key stays within its column's 128 characters.
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")


class InvalidSecretKeys(ValueError):
    """Key text that cannot be used; the message never quotes a key."""


class SecretUnreadable(Exception):
    """A stored value no configured key opens (the message names no secret)."""


@dataclass(frozen=True)
class SecretKey:
    key_id: str
    key: bytes = field(repr=False)


def derived_key_id(key: bytes) -> str:
    """The id of a key given without one: 32 bits of its SHA-256, which tell nothing
    of a random 256-bit key."""
    return "k" + hashlib.sha256(key).hexdigest()[:8]


def parse_keys(text: str) -> list[SecretKey]:
    """Keys separated by commas or white space, each `ID:BASE64` or a bare `BASE64`
    (its id derived from it); the base64 is of 32 bytes. The first seals."""
    keys: list[SecretKey] = []
    by_id: dict[str, bytes] = {}
    entries = [e for e in re.split(r"[,\s]+", text) if e]
    if not entries:
        raise InvalidSecretKeys("holds no key")
    for number, entry in enumerate(entries, 1):
        key_id, colon, encoded = entry.rpartition(":")
        if colon and not KEY_ID.fullmatch(key_id):
            raise InvalidSecretKeys(
                f"key {number}: the id before ':' must be 1-16 letters, digits, '_' or '-'"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise InvalidSecretKeys(
                f"key {number} is not the base64 of {KEY_BYTES} bytes"
                " (make one with `payorch secrets generate-key`)"
            )
        key_id = key_id or derived_key_id(key)
        if by_id.get(key_id, key) != key:
            raise InvalidSecretKeys(f"key id {key_id!r} is given twice, with two keys")
        if key_id not in by_id:
            by_id[key_id] = key
            keys.append(SecretKey(key_id, key))
    return keys


def new_key_text() -> str:
    """A new key as `ID:BASE64`, for a key file."""
    key = secrets.token_bytes(KEY_BYTES)
    return f"{derived_key_id(key)}:{base64.b64encode(key).decode()}"


def create_key_file(path: Path) -> bool:
    """Write a new key to `path` (mode 0600) unless a file is there; True when written.
    Made whole beside it and linked in: two processes starting at once never see half a
    key, and the second keeps the first one's."""
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(new_key_text() + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def is_sealed(stored: str) -> bool:
    return stored.startswith(MARKER + ":")


def key_id_of(stored: str) -> str:
    """The key id a sealed value names; "" for plain text."""
    return stored.split(":", 2)[1] if is_sealed(stored) else ""


class SecretCipher:
    """Seals with the first key, opens with any."""

    def __init__(self, keys: Sequence[SecretKey]) -> None:
        if not keys:
            raise ValueError("a cipher needs a key")
        self._write = keys[0].key_id
        self._aead = {k.key_id: AESGCM(k.key) for k in keys}

    @property
    def write_key_id(self) -> str:
        return self._write

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._aead)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead[self._write].encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{MARKER}:{self._write}:{body}"

    def unseal(self, stored: str, context: str) -> str:
        """The plain text of a stored value: a sealed one opened, checked against
        `context`; one stored before encryption as it is."""
        if not is_sealed(stored):
            return stored
        _, key_id, body = stored.split(":", 2)
        aead = self._aead.get(key_id)
        if aead is None:
            raise SecretUnreadable(
                f"{context} is sealed under key id {key_id!r}, which none of the configured"
                " keys (PAYORCH_SECRETS_KEY) has: give that key back, beside the new one"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if len(raw) < NONCE_BYTES + TAG_BYTES:
                raise InvalidTag
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretUnreadable(
                f"{context} does not open under key id {key_id!r}: another key under that"
                " id, a value copied from another row, or altered"
            ) from None

    def is_current(self, stored: str) -> bool:
        """Sealed under the key that seals now (nothing for reencrypt to do)."""
        return key_id_of(stored) == self._write
