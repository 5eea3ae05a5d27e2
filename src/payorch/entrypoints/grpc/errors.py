"""Domain errors -> gRPC statuses with google.rpc details (BadRequest, ErrorInfo)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from payorch.app.contract_monitor import reject_call
from payorch.domain.card_data import clip
from payorch.domain.request import ValidationIssue

DOMAIN = "payorch"


class RpcError(Exception):
    """Raised inside servicers; the handler wrapper turns it into a status."""

    def __init__(self, status: grpc.Status) -> None:
        self.status = status
        super().__init__(status.details)


def _status(code: int, message: str, details: Iterable[object]) -> grpc.Status:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)  # type: ignore[arg-type]
        packed.append(a)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


# An answer's details are bounded whatever a request makes of them: status details
# travel in a trailer, and a trailer over the transport's limit turns the answer into
# RESOURCE_EXHAUSTED. Cut with clip: a cut never makes a card number.
MAX_MESSAGE_LEN = 1000
MAX_VIOLATIONS = 50
MAX_FIELD_LEN = 200


def invalid_argument(violations: Iterable[tuple[str, str]], message: str = "") -> RpcError:
    listed = list(violations)
    shown = [(clip(f, MAX_FIELD_LEN), clip(d, MAX_MESSAGE_LEN)) for f, d in listed[:MAX_VIOLATIONS]]
    if len(listed) > MAX_VIOLATIONS:
        shown.append(("", f"and {len(listed) - MAX_VIOLATIONS} more problems"))
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in shown
        ]
    )
    text = message or "; ".join(f"{v.field}: {v.description}" for v in bad.field_violations)
    return RpcError(_status(code_pb2.INVALID_ARGUMENT, clip(text, MAX_MESSAGE_LEN), [bad]))


def error(code: int, message: str, reason: str = "", field: str = "") -> RpcError:
    details: list[object] = []
    if reason:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    if field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=field, description=clip(message, MAX_MESSAGE_LEN)
                    )
                ]
            )
        )
    return RpcError(_status(code, clip(message, MAX_MESSAGE_LEN), details))


def key_reused(exc: Exception) -> RpcError:
    """A create's request_id already used for something else: ALREADY_EXISTS."""
    return error(code_pb2.ALREADY_EXISTS, str(exc), "IDEMPOTENCY_KEY_REUSED", "request_id")


def in_progress(exc: Exception) -> RpcError:
    """The same request (under its request_id) is still running: ABORTED, to be made
    again shortly."""
    return error(code_pb2.ABORTED, str(exc), "REQUEST_IN_PROGRESS")


def too_late(exc: Exception) -> RpcError:
    """The caller's deadline leaves no time for a processor call to be answered: nothing
    was sent, and the call may be made again (same request_id) with a longer deadline.

    The call is refused for its caller's own input: recorded against `input/deadline`,
    not as a deadline payorch missed (`rpc/deadline_exceeded`)."""
    reject_call([ValidationIssue("deadline", str(exc), "input/deadline", fatal=True)])
    return error(code_pb2.DEADLINE_EXCEEDED, str(exc), "DEADLINE_TOO_SHORT")


def not_found(what: str) -> RpcError:
    return error(code_pb2.NOT_FOUND, f"{what} not found", "NOT_FOUND")
