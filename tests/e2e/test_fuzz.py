"""Fuzzing every RPC of the real server process, from the service descriptors.

Strategies are built from each request message's descriptor, recursively, so an RPC
added to SERVICES later is fuzzed with no new test code. Whatever arrives (generated
messages, oversized fields, odd unicode, unknown enum numbers, int64 extremes, huge
metadata, raw garbage bytes) the server must answer with a deliberate status: never
INTERNAL or UNKNOWN, never a crash or a hang, and a rejected call changes nothing in
the database.

One SQLite server for the module. Examples per test scale with the hypothesis profile
(dev: 60, ci: 100; see tests/conftest.py) and keep the module within about a minute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import message as pb_message
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from sqlalchemy.engine import make_url

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.result.v1 import result_pb2
from payorch.entrypoints.grpc.server import OPS_ONLY, SERVICES
from tests.e2e.server import RunningServer, start_server

pytestmark = pytest.mark.e2e

METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
METHOD_IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]
MAX_MESSAGE = 1 << 20  # settings.max_message_bytes
MAX_METADATA = 16 * 1024  # payorch.entrypoints.grpc.server.MAX_METADATA_BYTES

# A deliberate answer is fine; these mean the server failed, crashed or hung.
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAUTHENTICATED,  # every call carries a valid key
}
# Tables a rejected request may not touch (all but these): bookkeeping only.
UNCOUNTED_TABLES = {"alembic_version", "api_keys", "contract_violations"}

# Examples are a budget for the whole module, shared by however many RPCs there are:
# the module stays about a minute long as services are added (with a floor per RPC).
EXAMPLES = settings.default.max_examples
GENERATED_PER_RPC = max(10, 7 * EXAMPLES // len(METHODS))
GARBAGE_PER_RPC = max(5, 3 * EXAMPLES // len(METHODS))
ONE_FIELD_EXAMPLES = max(10, EXAMPLES // 4)
FUZZ = settings(
    max_examples=GENERATED_PER_RPC,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# -- the server under fuzz ------------------------------------------------------------
@dataclass
class Target:
    server: RunningServer
    channel: grpc.Channel
    db_path: str
    known_payment_ids: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    def call(
        self, method: MethodDescriptor, payload: bytes, metadata: list[tuple[str, Any]] = ()
    ) -> tuple[grpc.StatusCode, bytes | None, str]:
        """Send raw request bytes with the m_1 key first (the ops key to an ops-only RPC,
        which refuses a merchant before reading anything); return (code, response,
        details)."""
        rpc = self.channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            who = "ops" if method.full_name in OPS_ONLY else "m_1"
            reply = rpc(payload, metadata=[*self.server.auth(who), *metadata], timeout=15)
        except grpc.RpcError as exc:
            return exc.code(), None, exc.details() or ""
        return grpc.StatusCode.OK, reply, ""

    def row_counts(self) -> dict[str, int]:
        """Rows per table (migrations ran before the server said it was ready)."""
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            if not self.tables:
                rows = con.execute("SELECT name FROM sqlite_master WHERE type='table'")
                self.tables = sorted(r[0] for r in rows if r[0] not in UNCOUNTED_TABLES)
            counts = ", ".join(f'(SELECT count(*) FROM "{t}")' for t in self.tables)
            return dict(zip(self.tables, con.execute(f"SELECT {counts}").fetchone(), strict=True))
        finally:
            con.close()

    def listed_payment_ids(self) -> set[str]:
        ids: set[str] = set()
        token = ""
        list_method = orch.DESCRIPTOR.services_by_name["PaymentOrchestrator"]
        rpc = self.channel.unary_unary(
            f"/{list_method.full_name}/ListPayments",
            request_serializer=orch.ListPaymentsRequest.SerializeToString,
            response_deserializer=orch.ListPaymentsResponse.FromString,
        )
        while True:
            page = rpc(
                orch.ListPaymentsRequest(page_size=100, page_token=token),
                metadata=self.server.auth("ops"),
                timeout=15,
            )
            ids |= {p.payment_id for p in page.payments}
            token = page.next_page_token
            if not token:
                return ids

    def check(
        self,
        method: MethodDescriptor,
        payload: bytes,
        metadata: list[tuple[str, Any]] = (),
    ) -> grpc.StatusCode:
        """One call, judged: a deliberate status, a live server, no row kept if refused.

        Row counts of every table (cheap); tests of batches that are refused by
        construction also compare what ListPayments shows (see `refused_batch`)."""
        before = self.row_counts()
        code, _, details = self.call(method, payload, metadata)
        if currently_in_test_context():  # --hypothesis-show-statistics shows the mix
            event(f"{method.name}: {code.name}")
        assert code not in FORBIDDEN, f"{method.name} -> {code.name}: {details}"
        if method.full_name in OPS_ONLY:  # fuzzed past the door, or not fuzzed at all
            assert code != grpc.StatusCode.PERMISSION_DENIED, f"{method.name}: {details}"
        assert self.server.process.poll() is None, "the server died"
        if code != grpc.StatusCode.OK:
            after = self.row_counts()
            assert after == before, f"{method.name} refused ({code.name}) but stored: {after}"
        return code

    @contextlib.contextmanager
    def refused_batch(self) -> Iterator[None]:
        """Calls that must all be refused: the payments an ops key lists stay the same."""
        before = self.listed_payment_ids()
        yield
        assert self.listed_payment_ids() == before, "a refused request left a payment"


def _issue_keys(url: str) -> dict[str, str]:
    """Keys for m_1, m_2 and ops, straight into the database (the CLI path is tested in
    test_security; three CLI processes would cost seconds here)."""
    from payorch.adapters.clock import SystemClock
    from payorch.adapters.persistence.api_keys import SqlAlchemyApiKeyStore
    from payorch.adapters.persistence.engine import create_engine
    from payorch.app.auth import Scope

    async def issue() -> dict[str, str]:
        engine = create_engine(url)
        try:
            store, now = SqlAlchemyApiKeyStore(engine), SystemClock().now()
            keys = {}
            for who in ("m_1", "m_2"):
                made = await store.create(merchant_id=who, scope=Scope.MERCHANT, label="", now=now)
                keys[who] = made.plaintext
            made = await store.create(merchant_id=None, scope=Scope.OPS, label="", now=now)
            keys["ops"] = made.plaintext
            return keys
        finally:
            await engine.dispose()

    return asyncio.run(issue())


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{workdir / 'payorch.db'}"
    server = start_server(workdir, url, env={"PAYORCH_RECONCILE_INTERVAL_S": "3600"})
    server.keys = _issue_keys(url)
    channel = server.channel()
    t = Target(server, channel, make_url(url).database or "")
    for who in ("m_1", "m_2"):  # objects for id fields to hit: own and foreign
        request = orch.CreatePaymentRequest(
            request_id=f"fuzz-seed-{who}", amount_minor=1999, currency="usd",
            payment_method="pm_card_visa", merchant_id=who,
        )  # fmt: skip
        stub = channel.unary_unary(
            "/payments.orchestrator.v1.PaymentOrchestrator/CreatePayment",
            request_serializer=orch.CreatePaymentRequest.SerializeToString,
            response_deserializer=orch.CreatePaymentResponse.FromString,
        )
        t.known_payment_ids.append(
            stub(request, metadata=server.auth(who), timeout=15).payment.payment_id
        )
    KNOWN_IDS[:] = t.known_payment_ids
    yield t
    channel.close()
    server.stop()


# -- strategies from descriptors -----------------------------------------------------------
ODD_PIECES = [
    "\x00", "\u202e", "\u200f", "\u200b", "\ufeff", "\u2028", "\u0085", "e\u0301",
    "\U0001f44d\U0001f3fd", "\U0010ffff", "\r\n", "\t", "\x1b[31m", "\x7f", "\ufffd",
    "ｐｍ", "４２", "٤", "'", '"', "\\", "%s%n", "${jndi:x}", "../", "<script>", "\u0130",
]  # fmt: skip
INTERESTING = [
    "", " ", "null", "0", "-1", "4242 4242 4242 4242", "4242-4242-4242-4242",
    "pm_card_visa", "pm_card_chargeDeclined", "pm_card_authenticationRequired",
    "usd", "USD", "jpy", "bhd", "xyz", "m_1", "m_2", "M_1", "ops", "card", "apple_pay",
    "cus_1", "19.99", "-0.01", "0.001", "1e9", "NaN", "' OR '1'='1", "pay_", "\x00",
]  # fmt: skip
KNOWN_IDS: list[str] = []  # the seeded payments, filled by the fixture

# Any character a proto string can carry (lone surrogates cannot be encoded at all).
_any_char = st.characters(codec="utf-8")
_odd_text = st.lists(st.one_of(st.sampled_from(ODD_PIECES), _any_char), max_size=16).map("".join)
_oversized_text = st.builds(
    lambda piece, n: (piece * n)[: 64 * 1024],
    st.sampled_from(["a", "4", " ", "\u202e", "\U0001f600", "\x00", "é"]),
    st.integers(1, 64 * 1024),
)


def _known_id(i: int) -> str:
    return KNOWN_IDS[i % len(KNOWN_IDS)] if KNOWN_IDS else "pay_x"


def _page_token(when: dt.datetime, payment_id: str) -> str:
    raw = f"{when.isoformat()}|{payment_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_ids = st.one_of(st.builds(_known_id, st.integers(0, 8)), st.just(f"pay_{uuid.uuid4().hex}"))
# Field-name hints get deeper than the first validation; generic strings still apply.
# Page tokens over all the years a datetime holds, with offsets that overflow UTC there.
STRING_HINTS: dict[str, st.SearchStrategy[str]] = {
    "payment_id": _ids,
    "page_token": st.one_of(
        st.builds(
            _page_token,
            st.datetimes(
                timezones=st.sampled_from(
                    [
                        dt.UTC,
                        dt.timezone(dt.timedelta(hours=-8)),
                        dt.timezone(dt.timedelta(hours=1)),
                    ]
                ),
            ),
            _ids,
        ),
        st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    ),
    "currency": st.sampled_from(["usd", "USD", "eur", "jpy", "bhd", "xxx", "us", "usdd", "ü"]),
    "amount_decimal": st.from_regex(r"\A-?[0-9]{0,22}(\.[0-9]{0,5})?\Z"),
    "method": st.sampled_from(["card", "CARD", "apple_pay", "ApplePay", "gpay", "cash", ""]),
    "payment_method": st.from_regex(r"\Apm_card_[A-Za-z]{0,30}\Z"),
    "token": st.from_regex(r"\A(pm|tok|card|src)_[A-Za-z0-9_]{0,20}\Z"),
    "merchant_id": st.sampled_from(["", "m_1", "m_2", " m_1 ", "M_1", "m_1\u200b"]),
    "request_id": st.from_regex(r"\A[!-~]{1,40}\Z"),
    "customer_id": st.from_regex(r"\Acus_[A-Za-z0-9_]{0,12}\Z"),
    # Map entries (metadata): mostly plausible, so whole maps often pass validation.
    "key": st.from_regex(r"\A[a-z_]{1,12}\Z"),
    "value": st.text(max_size=20),
}


def _strings(name: str, *, big: bool) -> st.SearchStrategy[str]:
    small = [st.text(max_size=24), _odd_text, st.sampled_from(INTERESTING)]
    generic = st.one_of(*small, _oversized_text) if big else st.one_of(*small)
    hint = STRING_HINTS.get(name)
    return generic if hint is None else st.one_of(hint, generic)


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({lo, lo + 1, -1 if lo < 0 else 0, 0, 1, hi - 1, hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(-1000, 10**7)
                     .filter(lambda v: lo <= v <= hi))  # fmt: skip


_I32, _I64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)
_U32, _U64 = (0, 2**32 - 1), (0, 2**64 - 1)
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: _I32,
    FieldDescriptor.TYPE_SINT32: _I32,
    FieldDescriptor.TYPE_SFIXED32: _I32,
    FieldDescriptor.TYPE_INT64: _I64,
    FieldDescriptor.TYPE_SINT64: _I64,
    FieldDescriptor.TYPE_SFIXED64: _I64,
    FieldDescriptor.TYPE_UINT32: _U32,
    FieldDescriptor.TYPE_FIXED32: _U32,
    FieldDescriptor.TYPE_UINT64: _U64,
    FieldDescriptor.TYPE_FIXED64: _U64,
}
MAX_DEPTH = 3
# Sizes must not multiply through nesting (64 copies of 64 copies of 64 KiB...): only
# the request's own singular fields are oversized, and only its own repeated fields and
# maps are long, with small elements. A request stays within a few MiB.


def _scalar(f: FieldDescriptor, depth: int, *, big: bool = False) -> st.SearchStrategy[Any]:
    t = f.type
    if t in INT_RANGES:
        return _ints(*INT_RANGES[t])
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_STRING:
        return _strings(f.name, big=big)
    if t == FieldDescriptor.TYPE_BYTES:
        small = st.binary(max_size=32)
        return st.one_of(small, _oversized_text.map(str.encode)) if big else small
    if t == FieldDescriptor.TYPE_ENUM:
        known = st.sampled_from([v.number for v in f.enum_type.values])
        return known if f.enum_type.is_closed else st.one_of(known, _ints(*_I32))
    if t in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return message_strategy(f.message_type, depth + 1)
    raise AssertionError(f"no strategy for field type {t} ({f.full_name})")


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def _value(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if _is_map(f):
        key_f, value_f = (
            f.message_type.fields_by_name["key"],
            f.message_type.fields_by_name["value"],
        )
        keys, values = _scalar(key_f, depth), _scalar(value_f, depth)
        # Non-empty: "no entries" is the field left unset, generated anyway.
        few = st.dictionaries(keys, values, min_size=1, max_size=5 if depth == 0 else 2)
        if depth:
            return few
        many = st.builds(
            lambda v, n: {(f"k{i}" if key_f.type == FieldDescriptor.TYPE_STRING else i): v
                          for i in range(n)},
            values, st.integers(1, 400),
        )  # fmt: skip
        return st.one_of(few, many)
    if f.is_repeated:
        element = _scalar(f, depth)
        if depth:
            return st.lists(element, max_size=2)
        cap = 64 if f.type == FieldDescriptor.TYPE_MESSAGE else 5000
        return st.one_of(
            st.lists(element, max_size=5),
            st.builds(lambda x, n: [x] * n, element, st.integers(0, cap)),
        )
    return _scalar(f, depth, big=depth == 0)


def _assign(msg: pb_message.Message, f: FieldDescriptor, value: Any) -> None:
    target = getattr(msg, f.name)
    if _is_map(f):
        value_f = f.message_type.fields_by_name["value"]
        for k, v in value.items():
            if value_f.type == FieldDescriptor.TYPE_MESSAGE:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif f.is_repeated:
        target.extend(value)
    elif f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        target.CopyFrom(value)
    else:
        setattr(msg, f.name, value)


_CACHE: dict[tuple[str, int], st.SearchStrategy[pb_message.Message]] = {}


def message_strategy(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[pb_message.Message]:
    """Messages of `desc`: every field unset or set, one member (or none) per oneof."""
    key = (desc.full_name, depth)
    if key in _CACHE:
        return _CACHE[key]
    cls = GetMessageClass(desc)
    if depth > MAX_DEPTH:
        return st.just(cls())
    parts: list[st.SearchStrategy[Any]] = []
    in_oneof = set()
    for oneof in desc.oneofs:
        in_oneof |= {f.name for f in oneof.fields}
        parts.append(
            st.one_of(st.none(), *[st.tuples(st.just(f), _value(f, depth)) for f in oneof.fields])
        )
    for f in desc.fields:
        if f.name not in in_oneof:
            parts.append(st.one_of(st.none(), st.tuples(st.just(f), _value(f, depth))))

    def build(items: tuple[Any, ...]) -> pb_message.Message:
        msg = cls()
        for item in items:
            if item is not None:
                _assign(msg, *item)
        return msg

    strategy = st.tuples(*parts).map(build)
    _CACHE[key] = strategy
    return strategy


# Known-good requests to mutate: a message that passes validation, with one or two
# fields replaced, reaches the code behind it (processors, idempotency, paging). Message
# types without a base here are still fuzzed fully at random.
_RUNS = itertools.count()
VALID_BASES: dict[str, Callable[[str], pb_message.Message]] = {
    # A fresh request id per run of an example: a replay must not be an idempotent no-op.
    "payments.orchestrator.v1.CreatePaymentRequest": lambda tag: orch.CreatePaymentRequest(
        request_id=f"fuzz-{tag}-{next(_RUNS)}",
        amount_minor=1999,
        currency="usd",
        payment_method="pm_card_visa",
    ),
    "payments.orchestrator.v1.GetPaymentRequest": lambda tag: orch.GetPaymentRequest(
        payment_id=_known_id(len(tag))
    ),
    "payments.orchestrator.v1.ListPaymentsRequest": lambda tag: orch.ListPaymentsRequest(
        page_size=2
    ),
}


def _mutant(desc: Descriptor, tag: str, fields: list[FieldDescriptor], values: list[Any]):
    msg = VALID_BASES[desc.full_name](tag)
    for f, v in zip(fields, values, strict=True):
        if not f.is_repeated:
            msg.ClearField(f.name)
        _assign(msg, f, v)
    return msg


_tags = st.from_regex(r"\A[a-z]{12}\Z")


def mutant_strategy(
    desc: Descriptor, fields: list[FieldDescriptor]
) -> st.SearchStrategy[pb_message.Message]:
    """The valid base of `desc` with exactly these fields replaced by generated values."""
    return st.builds(
        lambda tag, values: _mutant(desc, tag, fields, list(values)),
        _tags,
        st.tuples(*[_value(f, 0) for f in fields]),
    )


def request_strategy(desc: Descriptor) -> st.SearchStrategy[pb_message.Message]:
    """Fully random messages, and (when there is a valid base) mutants of a valid one."""
    random = message_strategy(desc)
    if desc.full_name not in VALID_BASES:
        return random
    some_fields = st.lists(
        st.sampled_from(list(desc.fields)), min_size=1, max_size=2, unique_by=lambda f: f.name
    )
    return st.one_of(random, some_fields.flatmap(lambda fs: mutant_strategy(desc, fs)))


_header_key = st.from_regex(r"\Ax-[a-z0-9][a-z0-9_.-]{0,24}\Z").filter(
    lambda k: not k.endswith("-bin")
)
_header_value = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64),
    st.builds(lambda c, n: c * n, st.sampled_from("aZ~ 9"), st.integers(0, 24 * 1024)),
)
_binary_header = st.tuples(st.from_regex(r"\Ax-[a-z0-9]{1,12}-bin\Z"), st.binary(max_size=256))
METADATA = st.lists(st.one_of(st.tuples(_header_key, _header_value), _binary_header), max_size=4)


def _payment_ids(msg: pb_message.Message) -> Iterator[str]:
    for f, value in msg.ListFields():
        if f.name == "payment_id" and f.type == FieldDescriptor.TYPE_STRING:
            yield value
        elif f.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(f):
            for sub in value if f.is_repeated else [value]:
                yield from _payment_ids(sub)


# -- generated messages -------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@FUZZ
@given(data=st.data())
def test_generated_requests_never_get_an_internal_error(target, method, data):
    request = data.draw(request_strategy(method.input_type), label="request")
    metadata = data.draw(METADATA, label="metadata")
    target.check(method, request.SerializeToString(), metadata)


MUTATED_FIELDS = [
    (m, f) for m in METHODS if m.input_type.full_name in VALID_BASES for f in m.input_type.fields
]


@pytest.mark.parametrize(
    ("method", "field_"),
    MUTATED_FIELDS,
    ids=[f"{m.name}.{f.name}" for m, f in MUTATED_FIELDS],
)
@settings(FUZZ, max_examples=ONE_FIELD_EXAMPLES)
@given(data=st.data())
def test_a_valid_request_with_one_field_mutated_never_gets_an_internal_error(
    target, method, field_, data
):
    # Every field gets its own examples: a refusal late in the flow (after something
    # was stored) for one odd value of one field is found here, not left to chance.
    request = data.draw(mutant_strategy(method.input_type, [field_]), label="request")
    target.check(method, request.SerializeToString())


# -- raw bytes -----------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# Wire-shaped garbage: tags with arbitrary wire types and payloads parse further than noise.
_wireish = st.lists(
    st.tuples(st.integers(0, 2**29), st.integers(0, 7), st.binary(max_size=24)), max_size=8
).map(lambda parts: b"".join(_varint((n << 3) | w) + p for n, w, p in parts))
GARBAGE = st.one_of(st.binary(max_size=2048), _wireish)


def _decodes(method: MethodDescriptor, raw: bytes) -> bool:
    try:
        GetMessageClass(method.input_type).FromString(raw)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
@settings(FUZZ, max_examples=GARBAGE_PER_RPC)
@given(raw=GARBAGE)
def test_garbage_bytes_are_invalid_argument_never_internal(target, method, raw):
    code = target.check(method, raw)
    if not _decodes(method, raw):
        assert code == grpc.StatusCode.INVALID_ARGUMENT


def _first_string_field(method: MethodDescriptor) -> int:
    for f in method.input_type.fields:
        if f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated:
            return f.number
    return 1


CORRUPTIONS: dict[str, Callable[[MethodDescriptor], bytes]] = {
    "truncated varint": lambda m: b"\x08\xff",
    "varint longer than ten bytes": lambda m: b"\x08" + b"\xff" * 10 + b"\x01",
    "length past the end": lambda m: b"\x0a\x7f" + b"a",
    "field number zero": lambda m: b"\x00\x01",
    "wire type 7": lambda m: b"\x0f",
    "end group without start": lambda m: b"\x0c",
    "groups nested 100000 deep": lambda m: _varint((15 << 3) | 3) * 100_000,
    "invalid utf-8 in a string": lambda m: _varint(_first_string_field(m) << 3 | 2) + b"\x02\xff\xfe",
    "declared length of 2 GiB": lambda m: b"\x0a" + _varint(2**31) + b"x",
}  # fmt: skip


def test_every_corruption_is_one_protobuf_refuses_for_some_request():
    for name, corrupt in CORRUPTIONS.items():
        assert any(not _decodes(m, corrupt(m)) for m in METHODS), name


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_a_corrupt_wire_message_is_invalid_argument(target, method):
    # (A message type without fields takes some of them as unknown fields: fine too.)
    with target.refused_batch():
        for name, corrupt in CORRUPTIONS.items():
            raw = corrupt(method)
            code = target.check(method, raw)
            if not _decodes(method, raw):
                assert code == grpc.StatusCode.INVALID_ARGUMENT, name


def test_an_int64_amount_overflowing_the_varint_is_refused_cleanly(target):
    create = next(m for m in METHODS if m.name == "CreatePayment")
    # amount_minor (field 3) as a ten-byte varint carrying more than 64 bits.
    raw = b"\x18" + b"\xff" * 9 + b"\x7f"
    target.check(create, raw)


# -- limits --------------------------------------------------------------------------------
def _with_unknown_field(size: int) -> bytes:
    """A valid message for any type: one unknown length-delimited field of `size` bytes."""
    return _varint((1000 << 3) | 2) + _varint(size) + b"x" * size


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_a_message_over_1_mib_is_resource_exhausted(target, method):
    with target.refused_batch():
        over = target.check(method, _with_unknown_field(MAX_MESSAGE + 1))
    assert over == grpc.StatusCode.RESOURCE_EXHAUSTED
    under = target.check(method, _with_unknown_field(MAX_MESSAGE - 1024))
    assert under != grpc.StatusCode.RESOURCE_EXHAUSTED, "the limit is 1 MiB, not less"


# The metadata limit acts in the transport, before any handler: one RPC per service.
FIRST_OF_EACH_SERVICE = [s.methods[0] for s in SERVICES]


@pytest.mark.parametrize(
    "metadata",
    [
        [("x-big", "a" * (17 * 1024))],
        [(f"x-h{i}", "a" * 100) for i in range(200)],
        [("x-big-bin", b"\x00" * (20 * 1024))],
    ],
    ids=["17 KiB value", "200 headers", "20 KiB binary"],
)
@pytest.mark.parametrize(
    "method", FIRST_OF_EACH_SERVICE, ids=[m.containing_service.name for m in FIRST_OF_EACH_SERVICE]
)
def test_metadata_over_16_kib_is_refused_every_time(target, method, metadata):
    with target.refused_batch():
        for _ in range(2):  # a soft limit would let some through at random
            assert target.check(method, b"", metadata) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metadata_under_16_kib_is_accepted(target):
    listing = next(m for m in METHODS if m.name == "ListPayments")
    assert target.check(listing, b"", [("x-fine", "a" * (12 * 1024))]) == grpc.StatusCode.OK


def test_listing_and_the_row_counts_see_the_same_payments(target):
    # The per-call check counts rows; this shows the count means what ListPayments shows.
    con = sqlite3.connect(f"file:{target.db_path}?mode=ro", uri=True)
    try:
        stored = {r[0] for r in con.execute("SELECT id FROM payments")}
    finally:
        con.close()
    assert stored == target.listed_payment_ids()
    assert set(target.known_payment_ids) <= stored


# -- afterwards ------------------------------------------------------------------------------
def test_the_server_still_takes_a_normal_payment_after_the_fuzzing(target):
    assert target.server.process.poll() is None
    create = next(m for m in METHODS if m.name == "CreatePayment")
    request = orch.CreatePaymentRequest(
        request_id="fuzz-after", amount_minor=1999, currency="usd", payment_method="pm_card_visa"
    )
    code, reply, details = target.call(create, request.SerializeToString())
    assert code == grpc.StatusCode.OK, details
    payment = orch.CreatePaymentResponse.FromString(reply or b"").payment
    assert payment.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    assert set(_payment_ids(payment)) == {payment.payment_id}
    log = target.server.log()
    assert "unhandled error" not in log and "Traceback" not in log
