"""madsidecar: a per-node state sidecar in front of Redis."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
