"""`payorch secrets generate-key|status|reencrypt`: the keys sealing stored secrets, on
the database directly (docs/security.md, Secrets at rest). Never prints a key."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from payorch.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

Flags = Callable[[argparse.ArgumentParser], None]
T = TypeVar("T")


def cmd_generate_key(args: argparse.Namespace) -> int:
    """A new key in a file of its own (mode 0600); an existing file is kept, so a
    container's start can run it every time."""
    from payorch.adapters.secret_cipher import (
        InvalidSecretKeys,
        create_key_file,
        parse_keys,
    )

    path = Path(args.file)
    made = create_key_file(path)
    try:
        key_id = parse_keys(path.read_text())[0].key_id
    except InvalidSecretKeys as exc:
        print(f"payorch secrets generate-key: {path} is there and {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"file": str(path), "key_id": key_id, "made": made}))
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(database_url=args.database_url)


def _on_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`work` on the settings' database, migrated first as every command that opens it."""
    from payorch.adapters.persistence.engine import create_engine, migrate

    async def main() -> T:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def cmd_status(args: argparse.Namespace) -> int:
    """Stored secrets by what seals them; exit 1 when some are sealed under a key the
    settings do not have."""
    from payorch.adapters.persistence.stored_secrets import census
    from payorch.secrets_wiring import secret_cipher

    settings = _settings(args)
    cipher = secret_cipher(settings)
    counted = _on_database(settings, census)
    unknown = counted.unknown_to(cipher)
    print(
        json.dumps(
            {
                "write_key_id": cipher.write_key_id,
                "plain_text": counted.plain,
                "by_key_id": {k: n for k, n in sorted(counted.by_key.items()) if k},
                "to_reencrypt": counted.to_reseal(cipher),
                "unknown_key_ids": unknown,
            }
        )
    )
    return 1 if unknown else 0


def cmd_reencrypt(args: argparse.Namespace) -> int:
    """Seal what is in plain text or under an older key with the key that seals now."""
    from payorch.adapters.persistence.stored_secrets import reencrypt
    from payorch.adapters.secret_cipher import SecretUnreadable
    from payorch.secrets_wiring import secret_cipher

    if args.batch_size < 1:
        args.refuse("--batch-size must be 1 or more")
    settings = _settings(args)
    cipher = secret_cipher(settings)
    try:
        done = _on_database(
            settings, lambda engine: reencrypt(engine, cipher, batch=args.batch_size)
        )
    except SecretUnreadable as exc:
        print(f"payorch secrets reencrypt: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"key_id": cipher.write_key_id, "sealed": done.sealed, "resealed": done.resealed}
        )
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], db_flags: Flags) -> None:
    top = sub.add_parser(
        "secrets", help="the keys sealing stored secrets (webhook signing keys); database direct"
    )
    top_sub = top.add_subparsers(dest="secrets_command", required=True)

    generate = top_sub.add_parser(
        "generate-key", help="write a new key to a file (mode 0600); an existing file is kept"
    )
    generate.add_argument("--file", required=True, help="where to write it")
    generate.set_defaults(func=cmd_generate_key)

    status = top_sub.add_parser(
        "status", help="stored secrets by key id, and how many are in plain text"
    )
    db_flags(status)
    status.set_defaults(func=cmd_status)

    again = top_sub.add_parser(
        "reencrypt",
        help="seal secrets in plain text or under an older key with the first key; idempotent",
    )
    db_flags(again)
    again.add_argument(
        "--batch-size", type=int, default=500, help="endpoints per transaction (default 500)"
    )
    again.set_defaults(func=cmd_reencrypt)
