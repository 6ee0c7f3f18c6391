"""Every exception munggoggo raises on purpose, in one place.

`except munggoggo.MunggoggoError` catches them all. Each also keeps the standard exception
it derives from (shown in brackets), so `except ValueError`, `except TimeoutError`,
`except ConnectionError` and `except OSError` catch what they always caught:

```text
MunggoggoError
├── AMQPError                          the broker connection and channels
│   ├── LocalProtocolError             asked for something AMQP does not allow now
│   ├── RemoteProtocolError            the peer broke AMQP 0-9-1
│   ├── ConnectionLost                 the connection went away mid-operation
│   ├── AMQPConnectError [OSError]     could not connect (refused, TLS, timeout)
│   │   └── AuthenticationError        credentials or vhost refused
│   ├── BrokerError                    the broker closed a channel or the connection
│   │   ├── ContentTooLarge (311)   NoRoute (312)       NoConsumers (313)
│   │   ├── ConnectionForced (320)  InvalidPath (402)   AccessRefused (403)
│   │   ├── NotFound (404)          ResourceLocked (405)
│   │   ├── PreconditionFailed (406)
│   │   │   └── QueueMismatch           a queue exists with other properties
│   │   ├── FrameErrorReply (501)   SyntaxErrorReply (502)  CommandInvalid (503)
│   │   ├── ChannelErrorReply (504) UnexpectedFrame (505)   ResourceError (506)
│   │   └── NotAllowed (530)        NotImplementedReply (540)  InternalError (541)
│   ├── PublishError                   publishes the broker did not confirm
│   ├── PublishNacked                  the broker nacked a publish
│   ├── DrainTimeout [TimeoutError]    `drain(timeout)` ran out
│   └── IdentityInUse                  another agent holds this identity
├── RpcError                           a call answered with a JSON-RPC error
│   ├── RpcTimeout [TimeoutError]      no reply in time
│   └── AgentUnreachable [ConnectionError]  the target cannot be reached now
├── MethodNameClash [ValueError]       a behaviour exposes a name already served
├── EncodeError [ValueError]           a value cannot become a message body
├── DecodeError [ValueError]           a body cannot become the requested value
├── URLError [ValueError]              a broker URL that cannot be used
├── FrameError [ValueError]            bytes that are not valid AMQP framing
├── PropertiesTooLarge [ValueError]    properties over one content header frame
├── AgentStoppedByItself [RuntimeError]  `run()`: an agent stopped unasked
├── MissingExtra [ImportError]         an optional dependency is not installed
├── ClusterError [RuntimeError]        munggoggo.testing.cluster could not do its job
├── RecorderTimeout [TimeoutError]     a MessageRecorder's wait(n) ran out (`.received`)
├── DeadLettersBusy [TimeoutError]     another reader held the dead letters too long
└── DeadLettersTimeout [TimeoutError]  a dead-letter scan ran out of time (`.result`)
```

The most used of these are importable from `munggoggo` itself too.
"""

from __future__ import annotations

from ._speedups import FrameError, MunggoggoError, PropertiesTooLarge
from .agent import IdentityInUse
from .amqp.errors import (
    AccessRefused,
    AMQPConnectError,
    AMQPError,
    AuthenticationError,
    BrokerError,
    ChannelErrorReply,
    CommandInvalid,
    ConnectionForced,
    ConnectionLost,
    ContentTooLarge,
    FrameErrorReply,
    InternalError,
    InvalidPath,
    LocalProtocolError,
    NoConsumers,
    NoRoute,
    NotAllowed,
    NotFound,
    NotImplementedReply,
    PreconditionFailed,
    RemoteProtocolError,
    ResourceError,
    ResourceLocked,
    SyntaxErrorReply,
    UnexpectedFrame,
)
from .deadletter_lock import DeadLettersBusy
from .deadletters import DeadLettersTimeout
from .durable import QueueMismatch
from .engine import DrainTimeout, PublishError, PublishNacked
from .envelope import DecodeError, EncodeError
from .extras import MissingExtra
from .rpc import AgentUnreachable, RpcError, RpcTimeout
from .rpc_registry import MethodNameClash
from .runner import AgentStoppedByItself
from .testing.cluster import ClusterError
from .testing.recorder import RecorderTimeout
from .url import URLError

__all__ = [
    "AMQPConnectError",
    "AMQPError",
    "AccessRefused",
    "AgentStoppedByItself",
    "AgentUnreachable",
    "AuthenticationError",
    "BrokerError",
    "ChannelErrorReply",
    "ClusterError",
    "CommandInvalid",
    "ConnectionForced",
    "ConnectionLost",
    "ContentTooLarge",
    "DeadLettersBusy",
    "DeadLettersTimeout",
    "DecodeError",
    "DrainTimeout",
    "EncodeError",
    "FrameError",
    "FrameErrorReply",
    "IdentityInUse",
    "InternalError",
    "InvalidPath",
    "LocalProtocolError",
    "MethodNameClash",
    "MissingExtra",
    "MunggoggoError",
    "NoConsumers",
    "NoRoute",
    "NotAllowed",
    "NotFound",
    "NotImplementedReply",
    "PreconditionFailed",
    "PropertiesTooLarge",
    "PublishError",
    "PublishNacked",
    "QueueMismatch",
    "RecorderTimeout",
    "RemoteProtocolError",
    "ResourceError",
    "ResourceLocked",
    "RpcError",
    "RpcTimeout",
    "SyntaxErrorReply",
    "URLError",
    "UnexpectedFrame",
]
