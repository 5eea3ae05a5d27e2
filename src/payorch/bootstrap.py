"""The one place that builds adapters from settings and wires them into the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.clock import SystemClock
from payorch.adapters.persistence.api_keys import SqlAlchemyApiKeyStore
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.merchant_configs import SqlAlchemyMerchantConfigStore
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation
from payorch.app.auth import Authenticator
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService, ProcessorEvents
from payorch.app.settlement import Settlement
from payorch.app.ports import Clock, Processor
from payorch.app.router import Router
from payorch.settings import Settings


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
    simulated: dict[str, SimulatedProcessor] = field(default_factory=dict)

    async def close(self) -> None:
        for processor in self.processors.values():
            aclose = getattr(processor, "aclose", None)
            if aclose is not None:
                await aclose()
        await self.engine.dispose()


def build_processors(
    settings: Settings,
) -> tuple[dict[str, Processor], dict[str, SimulatedProcessor]]:
    processors: dict[str, Processor] = {}
    simulated: dict[str, SimulatedProcessor] = {}
    if settings.stripe_api_key:
        from payorch.adapters.processors.stripe import StripeProcessor

        processors["stripe"] = StripeProcessor(
            settings.stripe_api_key,
            api_base=settings.stripe_api_base or None,
            timeout_s=settings.call_timeout_s,
            allow_live=settings.stripe_allow_live,
        )
    for name in settings.processor_names:
        if name == "stripe":
            continue
        spec = settings.simulate_by_processor.get(name, settings.simulate)
        sim = SimulatedProcessor(name, Simulation.parse(spec))
        simulated[name] = sim
        processors[name] = sim
    return processors, simulated


async def bootstrap(
    settings: Settings, *, clock: Clock | None = None, run_migrations: bool = True
) -> Container:
    clock = clock or SystemClock()
    engine = create_engine(settings.database_url)
    if run_migrations:
        await migrate(engine)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    processors, simulated = build_processors(settings)
    router = Router(processors, clock, call_timeout_s=settings.call_timeout_s)
    # A method with no processors configured may use every one, Stripe first.
    configs = MerchantConfigs(
        SqlAlchemyMerchantConfigStore(engine),
        clock,
        list(processors),
        cache_s=settings.config_cache_s,
    )
    payments = PaymentService(uow, router, clock, configs, Settlement(processors, clock))
    keys = SqlAlchemyApiKeyStore(engine)
    return Container(
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
        simulated=simulated,
    )
