"""pubsub.*: messages to every subscriber on every node."""

from .capability import PubSub

__all__ = ["PubSub"]
