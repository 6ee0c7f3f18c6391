"""munggoggo: a message-based asyncio agent framework on RabbitMQ."""

__version__ = "0.1.0"
