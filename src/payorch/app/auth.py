"""Who is calling: API keys (stored only as hashes) bound to a merchant or to ops."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from payorch.app.ports import Clock
from payorch.app.read_cache import ReadCache
from payorch.domain.request import merchant_id_issues

KEY_PREFIX = "po_"
# What issue_key makes a key's id: no secret (`payorch keys list` prints it).
KEY_ID = re.compile(r"[0-9a-f]{12}")


class Scope(enum.Enum):
    MERCHANT = "merchant"
    # Operators: health, stats across merchants, violations, any merchant's config.
    OPS = "ops"


@dataclass(frozen=True, slots=True)
class Principal:
    scope: Scope
    merchant_id: str | None
    key_id: str

    @property
    def is_ops(self) -> bool:
        return self.scope is Scope.OPS


class Unauthenticated(Exception):
    pass


class PermissionDenied(Exception):
    pass


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key_id: str
    plaintext: str
    key_hash: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key_id, plaintext, hash_key(plaintext))


class ApiKeyStore(Protocol):
    async def find(self, key_hash: str) -> Principal | None:
        """The principal of an active (not revoked) key."""
        ...


class _UnknownKey(Exception):
    """A read that found no active key: not kept by the cache of known keys."""

    def __init__(self, read_at: float) -> None:
        self.read_at = read_at


class Authenticator:
    """Checks bearer keys; caches answers briefly so a key costs no query per call.

    A revoked key stops working within `cache_s` seconds (plus one read). Known keys
    and unknown ones are kept apart, each bounded and dropping its oldest: a caller
    sending made-up keys pushes out other made-up keys, never a merchant's.
    """

    def __init__(
        self,
        store: ApiKeyStore,
        clock: Clock,
        *,
        cache_s: float = 5.0,
        max_known: int = 10_000,
        max_unknown: int = 1_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = cache_s
        self._known: ReadCache[str, Principal] = ReadCache(
            self._find, clock, ttl_s=cache_s, max_entries=max_known
        )
        # Hash -> when it was found unknown, oldest first.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._max_unknown = max_unknown

    async def authenticate(self, bearer: str) -> Principal:
        if not bearer.startswith(KEY_PREFIX) or len(bearer) > 128:
            raise Unauthenticated("invalid API key")
        key_hash = hash_key(bearer)
        found_unknown = self._unknown.get(key_hash)
        if found_unknown is not None and self._clock.monotonic() - found_unknown < self._ttl:
            raise Unauthenticated("invalid or revoked API key")
        try:
            return await self._known.get(key_hash)
        except _UnknownKey as unknown:
            self._remember_unknown(key_hash, unknown.read_at)
            raise Unauthenticated("invalid or revoked API key") from None

    async def _find(self, key_hash: str) -> Principal:
        read_at = self._clock.monotonic()
        principal = await self._store.find(key_hash)
        if principal is None:
            raise _UnknownKey(read_at)
        return principal

    def _remember_unknown(self, key_hash: str, read_at: float) -> None:
        if self._ttl <= 0:
            return
        self._unknown[key_hash] = read_at
        self._unknown.move_to_end(key_hash)
        if len(self._unknown) > self._max_unknown:
            self._unknown.popitem(last=False)


def principal_from_certificate(common_name: str) -> Principal | None:
    """Client-certificate identity: CN `merchant:<id>` or `ops`; None for any other CN.

    The id is held to the rules every RPC applies to a merchant id: one against them
    would act for a merchant no other credential names, so the certificate is refused
    (without repeating the id: it may hold a card number)."""
    if common_name == "ops":
        return Principal(Scope.OPS, None, "cert:ops")
    kind, _, merchant = common_name.partition(":")
    if kind != "merchant":
        return None
    if merchant_id_issues(merchant):
        raise Unauthenticated(
            "the client certificate's CN names no valid merchant id: it must be"
            " 'merchant:<id>' with an id of 1-64 letters, digits, '_', '-' or '.'"
        )
    return Principal(Scope.MERCHANT, merchant, f"cert:{merchant}")


def resolve_merchant(principal: Principal, requested: str) -> str:
    """The merchant a call acts for: the credential's; ops must name one."""
    requested = requested.strip()
    if principal.is_ops:
        return requested
    assert principal.merchant_id is not None
    if requested and requested != principal.merchant_id:
        raise PermissionDenied("the request names another merchant than the credential's")
    return principal.merchant_id


def read_scope(principal: Principal) -> str | None:
    """Merchant filter for reads: ops see every merchant."""
    return None if principal.is_ops else principal.merchant_id
