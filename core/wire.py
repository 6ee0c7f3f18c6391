"""The names of the wire contract (README, DESIGN.md): exchanges, queues, headers.

Other AMQP clients join the mesh by these names, so they live in one place.
"""

# RabbitMQ's ceiling for a TTL (per-message `expiration`, `x-message-ttl`, `x-expires`):
# ten years in milliseconds. A larger value is refused (PRECONDITION_FAILED).
MAX_TTL_MS = 315_360_000_000

TOPIC_EXCHANGE = "munggoggo.topic"  # topic, durable: pub/sub, routing key = topic
FANOUT_EXCHANGE = "munggoggo.fanout"  # fanout, durable: broadcast to every agent's inbox
DEAD_LETTER_EXCHANGE = "munggoggo.dlx"  # topic, durable: what nobody could handle
DEAD_LETTER_QUEUE = "munggoggo.dead-letters"  # bound to the DLX with '#'
RETRIES_HEADER = "x-munggoggo-retries"  # failed handling attempts so far
REASON_HEADER = "x-munggoggo-reason"  # why a message was dead-lettered
# Set on a dead letter by the agent that gave up on it (read by core/deadletters.py):
DEAD_LETTER_ID_HEADER = "x-munggoggo-dead-letter-id"  # unique: `ctl dead-letters ... --id`
DEAD_LETTERED_AT_HEADER = "x-munggoggo-dead-lettered-at"  # seconds since the epoch
AGENT_HEADER = "x-munggoggo-agent"  # identity of the agent that gave up
BEHAVIOUR_HEADER = "x-munggoggo-behaviour"  # its behaviour, if one was handling it
QUEUE_HEADER = "x-munggoggo-queue"  # the queue it was consumed from: requeue goes back there
ORIGINAL_EXCHANGE_HEADER = "x-munggoggo-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-munggoggo-original-routing-key"
REQUEUED_FROM_HEADER = "x-munggoggo-requeued-from"  # set by a requeue: the dead letter's id
# Set on an RPC request by the caller: when its wait ends, as integer milliseconds since the
# epoch (core/rpc_deadlines.py); the callee never starts a request past it.
DEADLINE_HEADER = "x-munggoggo-deadline"
# Delayed delivery (core/delays.py): a delayed message or retry waits in a delay queue
# `munggoggo.delay.<ms>.<target>` (durable, x-message-ttl = ms) until RabbitMQ dead-letters
# it, with the routing key it was published with, to the target exchange.
DELAY_EXCHANGE = "munggoggo.delay"  # headers, durable: routes on DELAY_HEADER (all-with-x)
DELAY_QUEUE_PREFIX = "munggoggo.delay."
DELAY_HEADER = "x-munggoggo-delay"  # the delay queue a delayed message waits in
# Target exchange -> the last part of a delay queue's name.
DELAY_TARGETS = {"": "direct", TOPIC_EXCHANGE: "topic", FANOUT_EXCHANGE: "fanout"}
# The identities of the gateway workers' client agents start with this (gateway/mesh.py):
# they are no agents of the mesh for whoever lists or documents it.
GATEWAY_PREFIX = "gateway-"
