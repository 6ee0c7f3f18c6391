"""`python -m bench gateway`: the gateway under wrk, vs a Starlette + aio-pika baseline."""
