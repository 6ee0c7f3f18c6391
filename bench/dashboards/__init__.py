"""`python -m bench dashboards`: the Grafana dashboards drawn from a loaded mesh's data."""
