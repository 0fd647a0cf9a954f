"""kafka-expose: expose each broker of an unmodified Kafka chart through its own internal LoadBalancer."""

from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("kafka-expose")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
