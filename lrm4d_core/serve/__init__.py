"""Remote inference: `lrm4d serve` (server.py, a gRPC server with dynamic batching, engine.py) and its
client (client.py: `RemoteBackend`, the node's remote backend). Wire format: lrm4d.proto; the
generated lrm4d_pb2*.py modules are committed (regenerate as the .proto's header says).
docs/serving.md covers deployment and scaling out.

Importing this package imports neither torch nor grpc; import the submodules you need.
"""
