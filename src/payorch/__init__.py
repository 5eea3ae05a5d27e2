"""payorch: payment orchestration over gRPC."""
