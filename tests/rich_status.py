"""What a refusal says field by field: the google.rpc BadRequest details of a failed call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def field_violations(exc: grpc.RpcError) -> dict[str, str]:
    """Field -> description of every BadRequest field violation the status carries."""
    status = rpc_status.from_call(exc)
    out: dict[str, str] = {}
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def error_reasons(exc: grpc.RpcError) -> list[str]:
    """The reason of every google.rpc ErrorInfo the status carries."""
    status = rpc_status.from_call(exc)
    out = []
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            out.append(info.reason)
    return out
