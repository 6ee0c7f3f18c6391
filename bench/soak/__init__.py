"""`python -m bench soak`: the agent pipe through a fault proxy, a fault every 30 s."""
