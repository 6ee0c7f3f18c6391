"""`python -m bench scaleout`: competing consumers across agent processes."""
