"""Generated gRPC stubs of the ferry.v1 API (clients/python/generate.py)."""
