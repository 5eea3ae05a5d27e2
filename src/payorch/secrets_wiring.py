"""The cipher sealing stored secrets, built from settings (docs/security.md, Secrets at
rest): the operator's keys, or on a SQLite file with none given, a key file beside it."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from payorch.adapters.persistence.engine import normalize_url
from payorch.adapters.secret_cipher import (
    KEY_BYTES,
    InvalidSecretKeys,
    SecretCipher,
    SecretKey,
    create_key_file,
    parse_keys,
)
from payorch.settings import InvalidSettings, Settings

_log = logging.getLogger("payorch.secrets")

LOCAL_KEY_SUFFIX = ".secrets-key"
NO_KEY = (
    "PAYORCH_SECRETS_KEY (or PAYORCH_SECRETS_KEY_FILE) is not set: on PostgreSQL payorch"
    " keeps webhook signing keys encrypted under it and will not store them in plain text"
    " (make one with `payorch secrets generate-key --file PATH`; docs/security.md)"
)


def local_key_file(database_url: str) -> Path | None:
    """Where a SQLite file database keeps its key when none is configured; None for a
    database in memory (its key lives and dies with it) or any other database."""
    url = normalize_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database + LOCAL_KEY_SUFFIX)


def secret_cipher(settings: Settings) -> SecretCipher:
    """The configured keys; InvalidSettings naming the variable (never a key) when they
    cannot be used, or when a PostgreSQL database has none."""
    if settings.secrets_key:
        try:
            return SecretCipher(parse_keys(settings.secrets_key))
        except InvalidSecretKeys as exc:
            raise InvalidSettings(
                f"PAYORCH_SECRETS_KEY (or PAYORCH_SECRETS_KEY_FILE): {exc}"
            ) from None
    url = normalize_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        raise InvalidSettings(NO_KEY)
    path = local_key_file(settings.database_url)
    if path is None:
        return SecretCipher([SecretKey("memory", secrets.token_bytes(KEY_BYTES))])
    try:
        if create_key_file(path):
            _log.warning(
                "made a key for the secrets this SQLite database stores at %s (mode 0600):"
                " without it they cannot be read; back it up apart from the database",
                path,
            )
        text = path.read_text()
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise InvalidSettings(
            f"PAYORCH_SECRETS_KEY is not set and the SQLite database's key file {path}"
            f" cannot be made or read: {exc.strerror or exc}"
        ) from None
    if mode & 0o077:
        _log.warning(
            "the key file %s may be read by other users (mode %o): chmod 600 it", path, mode
        )
    try:
        return SecretCipher(parse_keys(text))
    except InvalidSecretKeys as exc:
        raise InvalidSettings(f"the key file {path} (PAYORCH_SECRETS_KEY unset): {exc}") from None
