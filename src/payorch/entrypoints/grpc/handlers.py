"""Generic unary handlers built from service descriptors.

Every RPC goes through one wrapper: it authenticates the caller, refuses a
merchant an RPC its servicer lists in `OPS_ONLY` (before reading the request, so
a merchant learns nothing of what such an RPC accepts), decodes the request itself
(garbage bytes get INVALID_ARGUMENT, not INTERNAL), and maps errors to statuses.
The servicer methods receive (request, call) and stay thin.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message as pb_message
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2

from payorch.app.auth import (
    Authenticator,
    PermissionDenied,
    Principal,
    Unauthenticated,
    principal_from_certificate,
)
from payorch.entrypoints.grpc.errors import RpcError, error, invalid_argument

log = logging.getLogger("payorch.grpc")
# What a call gets while the database cannot be reached. Retrying is safe: a payment
# under the same request_id is never charged twice, and one whose result could not be
# stored is reconciled.
STORAGE_UNAVAILABLE = error(
    code_pb2.UNAVAILABLE,
    "the database cannot be reached: retry (a payment under the same request_id is never"
    " charged twice)",
    "STORAGE_UNAVAILABLE",
)


@dataclass(slots=True)
class Call:
    """What a servicer method knows about the call beyond its request."""

    principal: Principal
    context: grpc.aio.ServicerContext[Any, Any]
    rpc: str

    def deadline_s(self) -> float | None:
        remaining: float | None = self.context.time_remaining()
        return remaining


Method = Callable[[Any, Call], Awaitable[pb_message.Message]]


def _bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The bearer key of the call's one authorization header, or "" when it has none.

    Two headers are refused, whatever they hold: which one the call carries is
    ambiguous, and a proxy in front may have checked the other."""
    sent = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if len(sent) > 1:
        raise Unauthenticated("more than one authorization header: send one")
    if not sent or not isinstance(sent[0], str):
        return ""
    scheme, _, token = sent[0].partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _certificate_principal(context: grpc.aio.ServicerContext[Any, Any]) -> Principal | None:
    auth = context.auth_context()
    for cn in auth.get("x509_common_name", []):
        try:
            principal = principal_from_certificate(cn.decode(errors="replace"))
        except Unauthenticated as exc:
            # Named by its fingerprint, which `openssl x509 -fingerprint -sha256` prints:
            # the CN is the caller's text.
            log.warning(
                "client certificate refused (SHA-256 fingerprint %s): %s",
                _fingerprint(auth),
                exc,
                extra={"code": "UNAUTHENTICATED"},
            )
            raise
        if principal is not None:
            return principal
    return None


def _refuse_revoked_certificate(
    context: grpc.aio.ServicerContext[Any, Any], revoked: Callable[[bytes], bool]
) -> None:
    """What a handshake checking the CRL would have done: a revoked certificate gets
    nothing on its connection, whatever else the call carries (an API key too)."""
    auth = context.auth_context()
    pem = b"".join(auth.get("x509_pem_cert", []))
    if pem and revoked(pem):
        log.warning(
            "client certificate refused (SHA-256 fingerprint %s): revoked by the client CRL",
            _fingerprint(auth),
            extra={"code": "UNAUTHENTICATED"},
        )
        raise Unauthenticated("the client certificate is revoked")


def _fingerprint(auth: Mapping[str, Sequence[bytes]]) -> str:
    pem = b"".join(auth.get("x509_pem_cert", []))
    if not pem:
        return "unknown"
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))).digest()
    return ":".join(f"{b:02X}" for b in digest)


def build_handler(
    service: ServiceDescriptor,
    implementation: object,
    authenticator: Authenticator,
    storage_unreachable: Callable[[BaseException], bool] = lambda _: False,
    revoked: Callable[[bytes], bool] | None = None,
) -> grpc.GenericRpcHandler:
    """`revoked` tells whether a client certificate (PEM) is on the client CRL."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    # RPC name -> why a merchant may not call it.
    ops_only: Mapping[str, str] = getattr(implementation, "OPS_ONLY", {})
    for method in service.methods:
        request_cls = GetMessageClass(method.input_type)
        response_cls = GetMessageClass(method.output_type)
        impl: Method = getattr(implementation, method.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _wrap(
                f"/{service.full_name}/{method.name}",
                request_cls,
                impl,
                authenticator,
                storage_unreachable,
                ops_only.get(method.name),
                revoked,
            ),
            request_deserializer=None,
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _wrap(
    rpc: str,
    request_cls: type[pb_message.Message],
    impl: Method,
    authenticator: Authenticator,
    storage_unreachable: Callable[[BaseException], bool],
    ops_only: str | None,
    revoked: Callable[[bytes], bool] | None,
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[pb_message.Message]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            if revoked is not None:
                _refuse_revoked_certificate(context, revoked)
            principal = await _authenticate(context, authenticator)
            if ops_only is not None and not principal.is_ops:
                raise PermissionDenied(ops_only)
            request = request_cls()
            try:
                request.ParseFromString(raw)
            except (pb_message.DecodeError, RecursionError, ValueError) as exc:
                raise error(
                    code_pb2.INVALID_ARGUMENT, "the request is not a valid message"
                ) from exc
            # A NUL in any string is a 0 byte in the encoding: no 0 byte, nothing to find.
            nul = _field_with_nul(request) if b"\x00" in raw else ""
            if nul:
                raise invalid_argument([(nul, "must not contain NUL characters")])
            return await impl(request, Call(principal, context, rpc))
        except RpcError as exc:
            await context.abort_with_status(exc.status)
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except PermissionDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            if storage_unreachable(exc):
                # An outage, not a bug: one line each, no traceback, and a status the
                # caller retries on.
                log.warning(
                    "the database cannot be reached: %s", type(exc).__name__, extra={"rpc": rpc}
                )
                await context.abort_with_status(STORAGE_UNAVAILABLE.status)
            log.exception("unhandled error: %s", type(exc).__name__, extra={"rpc": rpc})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    handle.__name__ = rpc.rsplit("/", 1)[-1]
    return handle


def _field_with_nul(message: pb_message.Message, prefix: str = "") -> str:
    """The path of a string holding NUL (no database text type stores it), or ""."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            # The path names the map, not the key: a key is caller text, never echoed.
            for key, item in value.items():
                if any(isinstance(x, str) and "\x00" in x for x in (key, item)):
                    return name
                if isinstance(item, pb_message.Message):
                    found = _field_with_nul(item, f"{name}[].")
                    if found:
                        return found
        elif field.type == field.TYPE_STRING:
            items = value if field.is_repeated else [value]
            if any("\x00" in item for item in items):
                return name
        elif field.type == field.TYPE_MESSAGE:
            for i, item in enumerate(value if field.is_repeated else [value]):
                found = _field_with_nul(item, f"{name}[{i}]." if field.is_repeated else f"{name}.")
                if found:
                    return found
    return ""


async def _authenticate(
    context: grpc.aio.ServicerContext[Any, Any], authenticator: Authenticator
) -> Principal:
    bearer = _bearer(context)
    if bearer:
        return await authenticator.authenticate(bearer)
    principal = _certificate_principal(context)
    if principal is not None:
        return principal
    raise Unauthenticated("missing credential: send 'authorization: Bearer <api key>'")
