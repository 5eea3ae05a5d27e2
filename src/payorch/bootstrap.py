"""The one place that builds adapters from settings and wires them into the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.clock import SystemClock
from payorch.adapters.metrics import PrometheusHealthObserver, default_metrics
from payorch.adapters.persistence.api_keys import SqlAlchemyApiKeyStore
from payorch.adapters.persistence.availability import database_probe, storage_unreachable
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.merchant_configs import SqlAlchemyMerchantConfigStore
from payorch.adapters.persistence.stored_secrets import census, seal_plain
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.adapters.processors.simulated import (
    AnswerChallenge,
    InvalidSimulation,
    SimulatedProcessor,
    Simulation,
    answer_challenge,
)
from payorch.adapters.secret_cipher import SecretCipher
from payorch.adapters.tracing import InvalidTracingConfig, check_exporter
from payorch.app.auth import Authenticator
from payorch.app.database_readiness import DatabaseReadiness
from payorch.app.health import HealthTracker
from payorch.app.installments import ConfiguredInstallmentPolicies
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import (
    DUPLICATE_WAIT_S,
    MAX_CALL_TIMEOUT_S,
    PaymentService,
    ProcessorEvents,
)
from payorch.app.ports import Clock, Processor
from payorch.app.router import RUN_LIMIT_S, Router
from payorch.app.settlement import Settlement
from payorch.app.stalls import StallWatch
from payorch.domain.health import HealthPolicy, InvalidHealthPolicy
from payorch.installments_wiring import InstallmentsApp, build_installments, clock_from_settings
from payorch.observability_wiring import (
    ObservabilityApp,
    ObservabilityOptions,
    build_observability,
)
from payorch.secrets_wiring import secret_cipher
from payorch.settings import InvalidSettings, Settings

T = TypeVar("T")
_log = logging.getLogger("payorch.secrets")
_database_log = logging.getLogger("payorch.database")


@dataclass(frozen=True)
class TlsFiles:
    """The server's TLS files as `check_tls_files` read and checked them: the server
    binds with these bytes. Read again at bind, a file replaced in between would be
    served unchecked."""

    key: bytes
    certificate_chain: bytes
    client_ca: bytes | None = None


@dataclass
class Container:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    uow: SqlAlchemyUnitOfWorkFactory
    processors: dict[str, Processor]
    router: Router
    payments: PaymentService
    configs: MerchantConfigs
    api_keys: SqlAlchemyApiKeyStore
    authenticator: Authenticator
    processor_events: ProcessorEvents
    health: HealthTracker
    stalls: StallWatch
    # Whether the database answers; `payorch serve` probes it (readiness follows it).
    database: DatabaseReadiness
    simulated: dict[str, SimulatedProcessor] = field(default_factory=dict)
    # `payorch serve`'s TLS files, checked before the database was opened.
    tls: TlsFiles | None = None
    _stall_watch: asyncio.Task[None] | None = None
    installments: InstallmentsApp = field(init=False)
    observability: ObservabilityApp = field(init=False)

    @staticmethod
    def storage_unreachable(exc: BaseException) -> bool:
        """Whether a failure means the database could not be reached (callers retry)."""
        return storage_unreachable(exc)

    def set_simulated_faults(self, name: str, spec: str) -> None:
        """Replace a simulated processor's faults at run time (drills and demos).
        KeyError: not a simulated processor; InvalidSimulation (ValueError): bad spec."""
        self.simulated[name].set_simulation(Simulation.parse(spec))

    def simulated_challenges(self) -> AnswerChallenge | None:
        """The customer's side of the simulated processors' 3-D Secure (test mode only):
        None when no simulated processor is configured, and whenever Stripe is, so that
        no server taking real payments answers it."""
        if not self.simulated or "stripe" in self.processors:
            return None
        simulated = list(self.simulated.values())

        def answer(processor_payment_id: str, client_secret: str, passed: bool) -> str:
            _, status = answer_challenge(
                simulated, processor_payment_id, client_secret, passed=passed
            )
            return status

        return answer

    def watch_stalls(self) -> None:
        """Start noticing this process's own stalls, on a real clock only: a manual
        clock's jumps are not stalls."""
        if isinstance(self.clock, SystemClock) and self._stall_watch is None:
            self._stall_watch = asyncio.create_task(self.stalls.run())

    async def close(self) -> None:
        # A capture, void or refund whose caller went away runs to its save first.
        await self.payments.finish_in_flight()
        if self._stall_watch is not None:
            self._stall_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stall_watch
        for processor in self.processors.values():
            aclose = getattr(processor, "aclose", None)
            if aclose is not None:
                await aclose()
        await self.observability.close()
        await self._close_storage()

    async def _close_storage(self) -> None:
        """Close the pools, each connection saying goodbye to the database. One that
        answers nothing hears none of them, and each would wait its bound
        (PAYORCH_DATABASE_TIMEOUT_S), one after another: so the whole close gets one
        bound, or none once the probe has judged the database down, and the connections
        left are dropped (the server ends their sessions when it sees them go)."""
        bound = self.settings.database_timeout_s if self.database.up else 0.0
        try:
            async with asyncio.timeout(bound):
                await self.uow.close()
                await self.engine.dispose()
        except TimeoutError:
            _database_log.warning(
                "stopping while the database cannot be reached: its connections dropped, not closed"
            )
            await self.engine.dispose(close=False)


# A cache time is how stale a replica may be: another replica's config change, or a key
# revoked there, is seen once it has passed. Past an hour (or infinite, or NaN) the
# docs' promise that it is seen "within that" means little or nothing.
MAX_CACHE_S = 3600.0
# How long a stopping replica drains and then waits for its calls: NaN or a negative
# one would skip them, an infinite one would never stop without a second signal.
MAX_STOP_S = 3600.0
# A day: longer, a caller's forgotten connections pile up for as long as it runs.
MAX_CONNECTION_IDLE_S = 86400.0
MIN_WEBHOOK_DISABLE_AFTER_S = 86400.0
MAX_WEBHOOK_DISABLE_AFTER_S = 30 * 86400.0
# Under a tenth of a second an idle scheduler or dispatcher asks the database for work
# more than ten times a second (0: back to back). Over a day, an installment is charged
# a day late; over an hour, a webhook waits an hour for its first try.
MIN_INTERVAL_S = 0.1
MAX_SCHEDULER_INTERVAL_S = 86400.0
MAX_WEBHOOK_INTERVAL_S = 3600.0
# One webhook request. Over a minute, a few receivers that hang hold every one of the
# dispatcher's sending slots that long; under 0.1 s no receiver answers in time.
MAX_WEBHOOK_TIMEOUT_S = 60.0
# A claim's lease: whoever claims an installment whose lease ran out charges it again
# under the same attempt. It must outlast a charge's processor call and the wait for
# an identical charge still in flight (DUPLICATE_WAIT_S), or a slow call loses its claim
# to another worker mid-charge. Over a day, a dead worker's claims are charged a day late.
MAX_LEASE_S = 86400.0


def check_times(settings: Settings) -> None:
    """Refuse a time setting outside its bounds (NaN is outside every one)."""
    for var, value, low, high, note in (
        ("PAYORCH_AUTH_CACHE_S", settings.auth_cache_s, 0.0, MAX_CACHE_S, " (0: not cached)"),
        ("PAYORCH_CONFIG_CACHE_S", settings.config_cache_s, 0.0, MAX_CACHE_S, " (0: not cached)"),
        ("PAYORCH_SHUTDOWN_DRAIN_S", settings.shutdown_drain_s, 0.0, MAX_STOP_S, ""),
        ("PAYORCH_GRACE_PERIOD_S", settings.grace_period_s, 0.0, MAX_STOP_S, ""),
        # Over a minute an outage is noticed a minute late (under a tenth of a second,
        # below, the probe is most of what the database does for an idle replica).
        (
            "PAYORCH_DATABASE_PROBE_INTERVAL_S",
            settings.database_probe_interval_s,
            0.0,
            60.0,
            " (0: readiness does not follow the database)",
        ),
        (
            "PAYORCH_DATABASE_PROBE_TIMEOUT_S",
            settings.database_probe_timeout_s,
            MIN_INTERVAL_S,
            60.0,
            "",
        ),
        # Under a tenth of a second a busy database's statements fail; over ten minutes
        # a silent one holds payments, passes and the pools' connections that long.
        ("PAYORCH_DATABASE_TIMEOUT_S", settings.database_timeout_s, MIN_INTERVAL_S, 600.0, ""),
        # Under a millisecond a processor call times out at once. Past MAX_CALL_TIMEOUT_S
        # no capture or void fits in a run's limit: every one would be left, silently,
        # to the reconciler (docs/recovery.md, How long a live run lasts).
        (
            "PAYORCH_CALL_TIMEOUT_S",
            settings.call_timeout_s,
            0.001,
            MAX_CALL_TIMEOUT_S,
            f" (a capture, two tries each looked up, must fit in a run's {RUN_LIMIT_S:g} s)",
        ),
        # Under a second, passes run back to back and hold the database.
        ("PAYORCH_RECONCILE_INTERVAL_S", settings.reconcile_interval_s, 1.0, 86400.0, ""),
        # Under a day a brief outage disables endpoints; over a month, a dead one
        # costs a month of attempts.
        (
            "PAYORCH_WEBHOOK_DISABLE_AFTER_S",
            settings.webhook_disable_after_s,
            MIN_WEBHOOK_DISABLE_AFTER_S,
            MAX_WEBHOOK_DISABLE_AFTER_S,
            "",
        ),
        (
            "PAYORCH_MAX_CONNECTION_IDLE_S",
            settings.max_connection_idle_s,
            0.1,
            MAX_CONNECTION_IDLE_S,
            "",
        ),
        (
            "PAYORCH_SCHEDULER_INTERVAL_S",
            settings.scheduler_interval_s,
            MIN_INTERVAL_S,
            MAX_SCHEDULER_INTERVAL_S,
            "",
        ),
        (
            "PAYORCH_WEBHOOK_INTERVAL_S",
            settings.webhook_interval_s,
            MIN_INTERVAL_S,
            MAX_WEBHOOK_INTERVAL_S,
            "",
        ),
        ("PAYORCH_WEBHOOK_TIMEOUT_S", settings.webhook_timeout_s, 0.1, MAX_WEBHOOK_TIMEOUT_S, ""),
        (
            "PAYORCH_SCHEDULER_LEASE_S",
            settings.scheduler_lease_s,
            settings.call_timeout_s + DUPLICATE_WAIT_S,
            MAX_LEASE_S,
            f" (at least PAYORCH_CALL_TIMEOUT_S + {DUPLICATE_WAIT_S:g} s:"
            " a claim must outlast its charge's processor call)",
        ),
    ):
        if not low <= value <= high:
            raise InvalidSettings(f"{var} must be {low:g}..{high:g} seconds{note}, not {value}")
    if 0 < settings.database_probe_interval_s < MIN_INTERVAL_S:
        raise InvalidSettings(
            f"PAYORCH_DATABASE_PROBE_INTERVAL_S must be 0 (off) or {MIN_INTERVAL_S:g}..60"
            f" seconds, not {settings.database_probe_interval_s}"
        )


# The most PAYORCH_MAX_CONCURRENT_RPCS may be. Its default, 2,000, is twice the
# benchmark's 1,000 in flight, and bounds what many connections can hold in memory.
MAX_CONCURRENT_RPCS = 100_000
# An answer may be four times a request, and grpc holds both limits in 32 bits. Under
# 1 KiB not even a payment fits; grpc reads a negative limit as none at all.
MIN_MESSAGE_BYTES = 1024
MAX_MESSAGE_BYTES = (2**31 - 1) // 4
# Installments one scheduler claims at a time, and has in flight: 0 claims nothing
# however much is due. Past 10,000 at once one process, not the setting, is the limit.
MAX_SCHEDULER_AT_ONCE = 10_000
# Calls slower than the SLO are violations: 0 makes every call one, NaN none ever. An
# hour is past every deadline a caller gives.
MAX_LATENCY_SLO_MS = 3_600_000
# Violations waiting in memory for their write (0: every one dropped); a million is
# already a sizeable share of a replica's memory while the database is down.
MAX_VIOLATION_BUFFER = 1_000_000
# The collector's first generation (0: Python's 700). Past a million, short-lived
# cycles pile up between collections (and gc takes no more than a C int).
MAX_GC_THRESHOLD = 1_000_000


# The largest TCP port; grpc and aiohttp took a larger one modulo 65536.
MAX_PORT = 65535


def check_limits(settings: Settings) -> None:
    """Refuse a count setting outside its bounds (a port over 65535 was taken modulo
    65536: /metrics and /readyz answered on another port)."""
    for var, value, low, high in (
        ("PAYORCH_MAX_CONCURRENT_RPCS", settings.max_concurrent_rpcs, 1, MAX_CONCURRENT_RPCS),
        ("PAYORCH_HTTP_PORT", settings.http_port, 0, MAX_PORT),
        (
            "PAYORCH_MAX_MESSAGE_BYTES",
            settings.max_message_bytes,
            MIN_MESSAGE_BYTES,
            MAX_MESSAGE_BYTES,
        ),
        ("PAYORCH_SCHEDULER_BATCH_SIZE", settings.scheduler_batch_size, 1, MAX_SCHEDULER_AT_ONCE),
        ("PAYORCH_SCHEDULER_CONCURRENCY", settings.scheduler_concurrency, 1, MAX_SCHEDULER_AT_ONCE),
        ("PAYORCH_LATENCY_SLO_MS", settings.latency_slo_ms, 1, MAX_LATENCY_SLO_MS),
        ("PAYORCH_VIOLATION_BUFFER", settings.violation_buffer, 1, MAX_VIOLATION_BUFFER),
        ("PAYORCH_GC_THRESHOLD", settings.gc_threshold, 0, MAX_GC_THRESHOLD),
    ):
        if not low <= value <= high:
            raise InvalidSettings(f"{var} must be {low:,}..{high:,}, not {value}")


def check_listen(settings: Settings) -> None:
    """The gRPC address is HOST:PORT, an IPv6 host in brackets, the port 0..65535 (0
    picks a free one). grpc bound a port over 65535 modulo 65536 (70000 served on 4464,
    65536 on a free port), -1 as 65535, and an address without a port on 443: serving
    where no client or load balancer looks, with a line saying where. A unix socket
    (`unix:PATH`, `unix-abstract:NAME`) is bound as grpc binds it."""
    scheme, _, path = settings.listen.partition(":")
    if scheme in ("unix", "unix-abstract") and path:
        return
    host, colon, port = settings.listen.rpartition(":")
    bare_ipv6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
    if (
        not colon
        or not host
        or bare_ipv6
        or not (port.isascii() and port.isdigit())
        or int(port) > MAX_PORT
    ):
        raise InvalidSettings(
            "PAYORCH_LISTEN (--listen) must be HOST:PORT with a port 0..65,535"
            " (0 picks a free one; an IPv6 host in brackets) or unix:PATH,"
            f" not {settings.listen!r}"
        )


def check_tls(settings: Settings) -> None:
    """TLS files come together. A client CA or a key without a certificate served
    plaintext, asking no client for a certificate, while the operator meant mTLS."""
    if not settings.tls_cert_file:
        for var, value in (
            ("PAYORCH_TLS_KEY_FILE", settings.tls_key_file),
            ("PAYORCH_TLS_CLIENT_CA_FILE", settings.tls_client_ca_file),
        ):
            if value:
                raise InvalidSettings(
                    f"{var} needs PAYORCH_TLS_CERT_FILE (and PAYORCH_TLS_KEY_FILE):"
                    " without a certificate the server would serve plaintext"
                )
    elif not settings.tls_key_file:
        raise InvalidSettings("PAYORCH_TLS_CERT_FILE needs PAYORCH_TLS_KEY_FILE, its private key")
    if settings.tls_client_crl_file and not settings.tls_client_ca_file:
        raise InvalidSettings(
            "PAYORCH_TLS_CLIENT_CRL_FILE needs PAYORCH_TLS_CLIENT_CA_FILE: without mutual"
            " TLS there is no client certificate to check"
        )


def check_tls_files(settings: Settings) -> TlsFiles | None:
    """The TLS files `payorch serve` reads, read once and parsed as grpc will take
    them; None without TLS. Found later, a CRL exited 1 after the database was opened,
    a file that cannot be read was a line naming no variable, and a certificate or key
    grpc cannot use said the address was in use. The scheduler, serving nothing, reads
    none: its host needs no server key. (The CRL is read again when it changes,
    `adapters/certificate_revocation.py`.)"""
    if not settings.tls_cert_file:
        return None
    # Loaded only with TLS configured: `cryptography` parses the files.
    from payorch.adapters import tls_files
    from payorch.adapters.certificate_revocation import load_crls

    cert_pem, chain = _parsed(
        "PAYORCH_TLS_CERT_FILE", settings.tls_cert_file, tls_files.certificates
    )
    key_pem, _ = _parsed(
        "PAYORCH_TLS_KEY_FILE",
        settings.tls_key_file,
        lambda pem: tls_files.check_private_key(pem, chain[0]),
    )
    if not settings.tls_client_ca_file:
        return TlsFiles(key_pem, cert_pem)
    ca_pem, cas = _parsed(
        "PAYORCH_TLS_CLIENT_CA_FILE", settings.tls_client_ca_file, tls_files.certificates
    )
    if settings.tls_client_crl_file:
        _parsed(
            "PAYORCH_TLS_CLIENT_CRL_FILE",
            settings.tls_client_crl_file,
            lambda pem: load_crls(pem, cas),
        )
    return TlsFiles(key_pem, cert_pem, ca_pem)


def _parsed(var: str, path: str, parse: Callable[[bytes], T]) -> tuple[bytes, T]:
    """The file at `path` and `parse` of it; InvalidSettings naming `var` when it
    cannot be read or parsed (ValueError). The message never quotes the file: it may
    be a key."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidSettings(f"{var}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        return pem, parse(pem)
    except ValueError as exc:
        raise InvalidSettings(f"{var}: {exc}") from None


# A bearer token a scrape sends in a header: visible ASCII, no space.
MIN_METRICS_TOKEN_LEN = 16


def check_metrics_token(settings: Settings) -> None:
    """Refuse a metrics token that is short enough to guess, or that no header can
    carry. The message never quotes it."""
    token = settings.metrics_token
    if not token:
        return
    if len(token) < MIN_METRICS_TOKEN_LEN or not all("!" <= c <= "~" for c in token):
        raise InvalidSettings(
            f"PAYORCH_METRICS_TOKEN (or _FILE) must be at least {MIN_METRICS_TOKEN_LEN}"
            " visible ASCII characters, no spaces (e.g. `openssl rand -hex 32`)"
        )


def check_tracing(settings: Settings) -> None:
    """An exporter that is none, or not installed, was a traceback after migrating."""
    try:
        check_exporter(settings.otel_exporter)
    except InvalidTracingConfig as exc:
        raise InvalidSettings(str(exc)) from None


def health_policy(settings: Settings) -> HealthPolicy:
    try:
        return _health_policy(settings)
    except InvalidHealthPolicy as exc:
        raise InvalidSettings(f"PAYORCH_HEALTH_*: {exc}") from None


def _health_policy(settings: Settings) -> HealthPolicy:
    return HealthPolicy(
        window_s=settings.health_window_s,
        min_requests=settings.health_min_requests,
        degraded_failure_rate=settings.health_degraded_failure_rate,
        unhealthy_failure_rate=settings.health_unhealthy_failure_rate,
        degraded_p95_ms=settings.health_degraded_p95_ms,
        unhealthy_p95_ms=settings.health_unhealthy_p95_ms,
        cooldown_s=settings.health_cooldown_s,
        half_open_probes=settings.health_half_open_probes,
        retry_budget_ratio=settings.health_retry_budget_ratio,
        retry_budget_min=settings.health_retry_budget_min,
        degraded_trial_every=settings.health_degraded_trial_every,
    )


def build_processors(
    settings: Settings, clock: Clock | None = None
) -> tuple[dict[str, Processor], dict[str, SimulatedProcessor]]:
    processors: dict[str, Processor] = {}
    simulated: dict[str, SimulatedProcessor] = {}
    if settings.stripe_api_key:
        from payorch.adapters.processors.stripe import LiveKeyRefused, StripeProcessor

        try:
            processors["stripe"] = StripeProcessor(
                settings.stripe_api_key,
                api_base=settings.stripe_api_base or None,
                timeout_s=settings.call_timeout_s,
                allow_live=settings.stripe_allow_live,
                clock=clock,
            )
        except LiveKeyRefused:
            raise InvalidSettings(
                "PAYORCH_STRIPE_API_KEY is a live key: refused unless PAYORCH_STRIPE_ALLOW_LIVE=1"
            ) from None
    for name in settings.processor_names:
        if name == "stripe":
            continue
        own = name in settings.simulate_by_processor
        spec = settings.simulate_by_processor[name] if own else settings.simulate
        try:
            simulation = Simulation.parse(spec)
        except InvalidSimulation as exc:
            where = (
                f"PAYORCH_SIMULATE_{name.upper()} (--simulate-for {name})"
                if own
                else "PAYORCH_SIMULATE (--simulate)"
            )
            raise InvalidSettings(f"{where}: {exc}") from None
        sim = SimulatedProcessor(name, simulation, charge_log=settings.sim_charge_log)
        simulated[name] = sim
        processors[name] = sim
    return processors, simulated


def check_processors(settings: Settings) -> None:
    """Refuse a processor list that builds no processor it names. Stripe's key comes
    from PAYORCH_STRIPE_API_KEY (or _FILE) only (a merchant config names processors,
    never their keys): `stripe` listed without one, or nothing to charge with at all,
    started a server whose every payment failed no_processor_available."""
    names = settings.processor_names
    if "stripe" in names and not settings.stripe_api_key:
        raise InvalidSettings(
            "PAYORCH_PROCESSORS (--processors) names stripe, but PAYORCH_STRIPE_API_KEY"
            " (or PAYORCH_STRIPE_API_KEY_FILE) is not set: Stripe is enabled by its key"
        )
    if not settings.stripe_api_key and not names:
        raise InvalidSettings(
            "PAYORCH_PROCESSORS (--processors) must name a processor (e.g. simulated) unless"
            " PAYORCH_STRIPE_API_KEY is set: with none every payment fails,"
            f" not {settings.processors!r}"
        )
    # Faults for a name not simulated here (a typo, stripe) applied to nothing.
    simulated = {name for name in names if name != "stripe"}
    unserved = sorted(set(settings.simulate_by_processor) - simulated)
    if unserved:
        name = unserved[0]
        raise InvalidSettings(
            f"PAYORCH_SIMULATE_{name.upper()} (--simulate-for {name}): {name} is not a"
            f" simulated processor of PAYORCH_PROCESSORS (--processors), {settings.processors!r}:"
            " its faults would apply to nothing"
        )


def check_settings(settings: Settings, *, charging: bool = True) -> HealthPolicy:
    """Refuse settings a process cannot start with (InvalidSettings naming the
    variable), before the database is opened; the health policy they make.
    `charging`: the process takes payments (not the webhook dispatcher alone, whose
    host may go without the Stripe key), so its processors are checked too."""
    if charging:
        check_processors(settings)
    check_times(settings)
    check_limits(settings)
    check_tls(settings)
    check_tracing(settings)
    check_metrics_token(settings)
    return health_policy(settings)


async def migrate_untimed(settings: Settings, engine: AsyncEngine) -> None:
    """Migrate on start, on PostgreSQL through a connection of its own whose statements
    PAYORCH_DATABASE_TIMEOUT_S does not bound: an index built on a large table, or the
    wait for another process's migration, may take longer than any call should, and
    cut short it would stop every start. Its connect is bounded: a database that
    answers nothing stops the start then, not after asyncpg's 60 s."""
    if engine.dialect.name != "postgresql":
        await migrate(engine)  # SQLite's statements have no such bound (and :memory:)
        return
    untimed = create_engine(
        settings.database_url, pool_size=1, connect_timeout_s=settings.database_timeout_s
    )
    try:
        await migrate(untimed)
    finally:
        await untimed.dispose()


def database_readiness(settings: Settings, clock: Clock, engine: AsyncEngine) -> DatabaseReadiness:
    readiness = DatabaseReadiness(
        database_probe(engine),
        clock,
        interval_s=settings.database_probe_interval_s,
        timeout_s=settings.database_probe_timeout_s,
    )
    readiness.add_observer(lambda up: default_metrics().database_up.set(1 if up else 0))
    return readiness


async def check_stored_secrets(engine: AsyncEngine, cipher: SecretCipher) -> None:
    """Refuse to start with keys that cannot open what is stored (every delivery to
    those endpoints would fail); seal what is still in plain text (rows stored before
    encryption: an upgrade leaves no signing key readable in the database); log what is
    under an older key, which `payorch secrets reencrypt` reseals after a rotation."""
    counted = await census(engine)
    unknown = counted.unknown_to(cipher)
    if unknown:
        await engine.dispose()
        raise InvalidSettings(
            "PAYORCH_SECRETS_KEY (or PAYORCH_SECRETS_KEY_FILE) has no key with id"
            f" {', '.join(repr(k) for k in unknown)}, which stored secrets are sealed"
            " under: give it back, after the key that seals now"
        )
    if counted.plain:
        done = await seal_plain(engine, cipher)
        if done.sealed:
            _log.warning(
                "sealed %d stored secrets that were in plain text under key id %r",
                done.sealed,
                cipher.write_key_id,
            )
    older = counted.to_reseal(cipher) - counted.plain
    if older:
        _log.warning(
            "%d stored secrets are under an older key: run `payorch secrets reencrypt`"
            " before dropping it",
            older,
        )


async def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    run_migrations: bool = True,
    observability: ObservabilityOptions | None = None,
    serving: bool = False,
    charging: bool = True,
) -> Container:
    """`serving`: for `payorch serve`, whose TLS files are checked before anything
    is opened. `charging`: False for a process that makes no payment (check_settings)."""
    clock = clock or clock_from_settings(settings)
    policy = check_settings(settings, charging=charging)
    if serving:
        check_listen(settings)
    tls = check_tls_files(settings) if serving else None
    processors, simulated = build_processors(settings, clock)
    cipher = secret_cipher(settings)
    engine = create_engine(settings.database_url, timeout_s=settings.database_timeout_s)
    if run_migrations:
        await migrate_untimed(settings, engine)
        await check_stored_secrets(engine, cipher)
    uow = SqlAlchemyUnitOfWorkFactory(engine, timeout_s=settings.database_timeout_s)
    if uow.writer is not None:
        default_metrics().payment_writes.track(uow.writer)
    observed = build_observability(settings, clock, engine, observability)
    # When tracing is on, every processor call is an attempt span.
    calls = observed.traced(processors)
    health = HealthTracker(
        policy,
        clock,
        processors=processors,
        observers=[PrometheusHealthObserver(default_metrics())],
    )
    stalls = StallWatch(clock, on_stall=default_metrics().process_stalls.observe)
    router = Router(
        calls, clock, call_timeout_s=settings.call_timeout_s, health=health, stalls=stalls
    )
    # A method with no processors configured may use every one, Stripe first.
    configs = MerchantConfigs(
        SqlAlchemyMerchantConfigStore(engine),
        clock,
        list(processors),
        cache_s=settings.config_cache_s,
    )
    payments = PaymentService(
        uow,
        router,
        clock,
        configs,
        Settlement(calls, clock, health=health, stalls=stalls),
        observation=observed.payment_observation,
        storage_unreachable=storage_unreachable,
    )
    keys = SqlAlchemyApiKeyStore(engine)
    container = Container(
        settings=settings,
        clock=clock,
        engine=engine,
        uow=uow,
        processors=processors,
        router=router,
        payments=payments,
        configs=configs,
        api_keys=keys,
        authenticator=Authenticator(keys, clock, cache_s=settings.auth_cache_s),
        processor_events=ProcessorEvents(uow, payments, clock),
        health=health,
        stalls=stalls,
        database=database_readiness(settings, clock, engine),
        simulated=simulated,
        tls=tls,
    )
    container.installments = build_installments(
        settings,
        clock,
        uow,
        payments,
        cipher=cipher,
        policies=ConfiguredInstallmentPolicies(configs),
    )
    container.observability = observed
    container.watch_stalls()
    return container
