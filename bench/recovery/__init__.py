"""`python -m bench recovery`: how fast agents get back what the broker took from them."""
