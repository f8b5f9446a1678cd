"""Generated gRPC and protobuf code (edgesync.v1)."""
