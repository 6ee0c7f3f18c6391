"""The names of the wire contract (README, DESIGN.md): exchanges, queues, headers.

Other AMQP clients join the mesh by these names, so they live in one place.
"""

TOPIC_EXCHANGE = "munggoggo.topic"  # topic, durable: pub/sub, routing key = topic
FANOUT_EXCHANGE = "munggoggo.fanout"  # fanout, durable: broadcast to every agent's inbox
DEAD_LETTER_EXCHANGE = "munggoggo.dlx"  # topic, durable: what nobody could handle
DEAD_LETTER_QUEUE = "munggoggo.dead-letters"  # bound to the DLX with '#'
RETRIES_HEADER = "x-munggoggo-retries"  # failed handling attempts so far
REASON_HEADER = "x-munggoggo-reason"  # why a message was dead-lettered
