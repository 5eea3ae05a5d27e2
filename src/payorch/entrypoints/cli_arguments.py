"""Argument types of the `payorch` command: input refused with one line and exit 2
(`Parser`), before any call or any write. A message never quotes a number back: it
could be a card number."""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from payorch.adapters import clock
from payorch.app.auth import KEY_ID, KEY_PREFIX
from payorch.domain.card_data import contains_card_number
from payorch.domain.money import MAX_AMOUNT_MINOR, Currency, UnknownCurrency
from payorch.domain.request import merchant_id_issues
from payorch.domain.webhook_delivery import MAX_SECRET_OVERLAP

if TYPE_CHECKING:
    from google.protobuf import timestamp_pb2


class Parser(argparse.ArgumentParser):
    """Refuses bad input in one line, `payorch CMD: error: ...`, with exit code 2, as
    the README says: argparse printed the command's whole usage above it, so the
    reason came last, after up to a dozen lines (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ASCII digits only, as the server reads them: int() takes every script's digits, and
# some read as others (the Bengali four looks like an 8).
_MINOR_RE = re.compile(r"[0-9]{1,16}")
_AMOUNT_RE = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,16})?")
_AMOUNT_RULE = "give minor units (1999) or a decimal (19.99)"


def amount(text: str) -> str:
    """Minor units or a decimal, as the wire takes it; whether the currency has that
    many decimals is the server's to say."""
    value = text.strip()
    if not _AMOUNT_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not an amount: {_AMOUNT_RULE}")
    if "." not in value and int(value) > MAX_AMOUNT_MINOR:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_AMOUNT_MINOR} minor units")
    return value


def refund_amount(text: str) -> int:
    """Minor units to refund: 0 on the wire means everything refundable, so a refund
    of nothing is refused here rather than sent as a full refund."""
    value = text.strip()
    if not _MINOR_RE.fullmatch(value.removeprefix("-")):
        raise argparse.ArgumentTypeError(
            "not an amount in minor units (500): omit --amount to refund everything"
        )
    minor = int(value)
    if minor <= 0:
        raise argparse.ArgumentTypeError(
            "must be greater than zero: omit --amount to refund everything"
        )
    if minor > MAX_AMOUNT_MINOR:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_AMOUNT_MINOR} minor units")
    return minor


def split(text: str) -> str:
    """`METHOD[=TOKEN][:AMOUNT],...`: each amount checked as --amount is."""
    for part in text.split(","):
        _, _, part_amount = part.partition(":")
        if part_amount.strip():
            try:
                amount(part_amount)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"a part's amount is {exc}") from None
    return text


# The longest deadline a command gives its call. grpc turns one past about 1e9 s (or
# inf) into a deadline already passed.
MAX_TIMEOUT_S = 86_400.0


def timeout(text: str) -> float:
    """A call's deadline in seconds. 0, a negative number, NaN or infinity failed the
    call as DEADLINE_EXCEEDED before it was sent, and `pay` then told to retry it under
    its request_id, as after a lost answer."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"not a deadline: give seconds above 0, at most {MAX_TIMEOUT_S:,.0f} (a day)"
        )
    return seconds


def overlap_hours(text: str) -> int:
    """How long a rotated-out webhook secret keeps signing: whole hours, 0 to 7 days."""
    most = int(MAX_SECRET_OVERLAP.total_seconds() // 3600)
    try:
        hours = int(text)
    except ValueError:
        hours = -1
    if not 0 <= hours <= most:
        raise argparse.ArgumentTypeError(f"give whole hours from 0 to {most}")
    return hours


def metadata_pair(text: str) -> str:
    """`KEY=VALUE` of `pay --metadata`. Without the `=`, the whole argument went as a key
    with an empty value (`--metadata order_id:1001` stored a key `order_id:1001`), and
    the payment was taken with metadata nobody meant. The key's rules are the server's."""
    if "=" not in text:
        raise argparse.ArgumentTypeError("not KEY=VALUE (e.g. order_id=1001)")
    return text


def simulate_for(text: str) -> str:
    """`NAME=SPEC` of `serve --simulate-for`. Without the `=`, the name went with no
    faults at all, and the drill ran against a healthy processor."""
    name, equals, _ = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(
            'not NAME=SPEC (e.g. sim_a="api_error=1.0"; sim_a= for no faults)'
        )
    return text


def pem_file(text: str) -> bytes:
    """A client's --tls-* file, read with the command line: one it cannot read is refused
    naming its flag, not with the system's line alone."""
    try:
        return Path(text).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror or exc}") from None


def check_client_tls(args: argparse.Namespace) -> None:
    """--tls-cert and --tls-key go together, and with --tls-ca: grpc's C core aborted
    the process on a certificate without its key (or a key alone), and without --tls-ca
    the call went in plaintext, which a TLS server closes ("Socket closed")."""
    if not hasattr(args, "tls_ca"):
        return
    cert, key = args.tls_cert is not None, args.tls_key is not None
    if cert != key:
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        args.refuse_client(
            f"{given} needs {missing}: give the client certificate and its private key together"
        )
    if cert and args.tls_ca is None:
        args.refuse_client(
            "--tls-cert and --tls-key need --tls-ca, the CA of the server's certificate:"
            " without it the call goes in plaintext"
        )


def currency(text: str) -> Currency:
    try:
        return Currency.parse(text)
    except UnknownCurrency:
        raise argparse.ArgumentTypeError("not an ISO-4217 currency code (usd, eur, ...)") from None


def parse_time(text: str) -> datetime:
    """ISO 8601; a date alone is midnight UTC; no zone means UTC."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def instant(text: str) -> datetime:
    """An ISO time with its zone (`--now`): a time without one would be read in no
    zone in particular, so several workers would not agree on it."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "not an ISO time with a zone (e.g. 2026-03-01T00:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2026-03-01T00:00:00Z")
    if not clock.within_range(when):
        # The clock, or a date a plan or a lease counts from it, would overflow.
        raise argparse.ArgumentTypeError(f"out of range: give a time {clock.CLOCK_RANGE}")
    return when


def webhook_secret(text: str) -> str:
    """A secret webhooks can be verified with (`listen --secret`): an empty one would
    start a receiver that refuses every webhook. The message never quotes it."""
    from payorch.webhooks import WebhookVerificationError, check_secret

    try:
        check_secret(text)
    except WebhookVerificationError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: give the endpoint's whsec_... secret") from None
    return text


def timestamp(text: str) -> timestamp_pb2.Timestamp | None:
    """An ISO time as a Timestamp; empty is no bound."""
    from google.protobuf import timestamp_pb2

    if not text.strip():
        return None
    t = timestamp_pb2.Timestamp()
    try:
        t.FromDatetime(parse_time(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "not an ISO time (e.g. 2026-03-01 or 2026-03-01T12:00:00Z)"
        ) from None
    except OverflowError:
        # 0001-01-01 east of UTC, or 9999-12-31 west of it: outside every Timestamp.
        raise argparse.ArgumentTypeError(
            "out of range: a time from 0001-01-01 to 9999-12-31 UTC"
        ) from None
    return t


# The length of api_keys.label: a longer label fails the insert on PostgreSQL.
MAX_KEY_LABEL_LEN = 128


def key_label(text: str) -> str:
    """A key's label, kept beside its hash and printed by `keys list`: text that
    column holds, and no card number."""
    if len(text) > MAX_KEY_LABEL_LEN:
        raise argparse.ArgumentTypeError(f"at most {MAX_KEY_LABEL_LEN} characters")
    if contains_card_number(text):
        raise argparse.ArgumentTypeError("looks like a card number: never put card data here")
    return text


def merchant(text: str) -> str:
    """A merchant id an operator names, held to the rules of every RPC: no card
    number, nothing an RPC would refuse. Empty is left to the command."""
    issues = merchant_id_issues(text, "--merchant") if text else []
    if issues:
        raise argparse.ArgumentTypeError(issues[0].message)
    return text


def key_id(text: str) -> str:
    """A key's id, to revoke it. A whole API key given instead (pasted by mistake) is
    refused without being repeated: it would stay in the terminal's scrollback and
    logs. Its id, which is no secret, is named instead."""
    if KEY_PREFIX in text:
        named = text.split(KEY_PREFIX, 1)[1].split("_", 1)[0]
        give = f"its id, {named}" if KEY_ID.fullmatch(named) else "the id"
        raise argparse.ArgumentTypeError(
            f"that is an API key, not a key id: give {give}, as `payorch keys list` prints it"
        )
    return text


# A gRPC header carries printable ASCII only: a key with anything else failed its call
# as INTERNAL "Invalid metadata", as if the server had broken. Never repeated: a secret.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
API_KEY_RULE = "not an API key: printable ASCII only, as `payorch keys create` prints one"


def is_sendable_key(text: str) -> bool:
    return _HEADER_VALUE.fullmatch(text) is not None


def api_key(text: str) -> str:
    if not is_sendable_key(text):
        raise argparse.ArgumentTypeError(API_KEY_RULE)
    return text


def shown_key_id(text: str) -> str:
    """A key id as a message may repeat it: only what has the shape of one, so that
    a secret given in its place is never repeated."""
    if KEY_ID.fullmatch(text):
        return repr(text)
    return "with that id (an id is 12 hex digits, as `payorch keys list` prints it)"
