"""`python -m bench cluster`: a local 3-node RabbitMQ cluster, and failover under load."""
