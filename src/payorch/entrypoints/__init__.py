"""The `payorch` command: serve, migrate, keys, and a client for the gRPC API."""

import os

# grpc's C core logs to stderr beside the JSON log, in a format of its own, and at
# INFO a line for every failed TLS handshake (a client certificate of another CA, a
# plaintext client, a port scan): its errors only, unless GRPC_VERBOSITY says
# otherwise (`debug` for a diagnosis). grpc reads it once, when first imported.
if not os.environ.get("GRPC_VERBOSITY"):
    os.environ["GRPC_VERBOSITY"] = "ERROR"
