"""The load generator of `python -m bench gateway`: wrk (C, one event loop per thread).

wrk keeps `connections` keep-alive connections busy, each POSTing the same JSON-RPC body
(Content-Type application/json) as soon as the previous answer arrived, for `duration`
seconds; `--latency` makes it print its latency distribution, from which p50/p99 are read.

Errors are everything that is not a correct answer:
- wrk's socket errors (connect, read, write, timeout: no answer within `timeout`);
- responses whose status is not 2xx, counted by the Lua script (wrk itself reports only
  status >= 400 as "Non-2xx or 3xx responses");
- 2xx responses whose body does not carry the expected result (`"result": <expected>`),
  also counted by the script, so a JSON-RPC error object answered with HTTP 200 (an agent
  timeout, say) is an error too.
The script's `response()` callback costs wrk a little CPU per response; it stays far below
what the servers measured here need (`python -m bench gateway --calibrate` shows wrk's own
ceiling on this machine against a trivial server).
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import shutil
import subprocess
import tempfile
from typing import Any

WRK_HELP = "wrk not found: install it (Debian/Ubuntu: apt-get install wrk)"

_LUA = r"""-- written by bench/gateway/load.py
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"

local expected = [==[%(pattern)s]==]
local threads = {}
bad_status = 0
bad_body = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad_status = bad_status + 1
  elseif not string.find(body, expected) then
    bad_body = bad_body + 1
  end
end

function done(summary, latency, requests)
  local s, b = 0, 0
  for _, t in ipairs(threads) do
    s = s + t:get("bad_status")
    b = b + t:get("bad_body")
  end
  io.write(string.format("BENCH_CHECK bad_status=%%d bad_body=%%d\n", s, b))
end
"""

_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")


def lua_script(body: bytes, expected_json: str) -> str:
    """The wrk script POSTing `body` and checking each answer for `"result": expected`."""
    text = body.decode()
    if "]==]" in text or "]==]" in expected_json:
        raise ValueError("neither the request body nor the result may contain ]==]")
    literal = _LUA_MAGIC.sub(r"%\1", expected_json)
    pattern = '"result"%s*:%s*' + literal + "%s*[,}]"
    return _LUA % {"body": text, "pattern": pattern}


@dataclasses.dataclass
class WrkResult:
    requests: int  # completed (any status)
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int  # as wrk counts them (status >= 400)
    bad_status: int  # status outside 200..299 (the script)
    bad_body: int  # 2xx without the expected result (the script)
    cpu_seconds: float | None = None  # wrk's own CPU (user + system)

    @property
    def errors(self) -> int:
        return self.socket_errors + max(self.bad_status, self.non_2xx) + self.bad_body


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_SIZE_UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's output (run with --latency and the script of `lua_script`)."""
    done = re.search(r"([0-9.]+)([kKMG]?) requests in " + _TIME, text)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+" + _TIME, text, re.M)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+" + _TIME, text, re.M)
    if not (done and rps and p50 and p99):
        raise ValueError(f"unexpected wrk output:\n{text}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    check = re.search(r"BENCH_CHECK bad_status=(\d+) bad_body=(\d+)", text)
    if not check:
        raise ValueError(f"wrk output without the script's check line:\n{text}")
    return WrkResult(
        requests=round(float(done.group(1)) * _SIZE_UNITS[done.group(2)]),
        seconds=_ms(done.group(3), done.group(4)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=round(_ms(*p50.groups()), 3),
        p99_ms=round(_ms(*p99.groups()), 3),
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        bad_status=int(check.group(1)),
        bad_body=int(check.group(2)),
    )


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError(WRK_HELP)
    return path


def run_wrk(
    url: str,
    body: bytes,
    expected_json: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    timeout: float = 2.0,
) -> WrkResult:
    """One wrk run against `url`; raises when wrk fails or its output cannot be read."""
    wrk = wrk_path()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-gateway-") as script:
        script.write(lua_script(body, expected_json))
        script.flush()
        argv = [
            wrk,
            f"--threads={min(threads, connections)}",
            f"--connections={connections}",
            f"--duration={max(1, round(duration))}s",
            f"--timeout={timeout:g}s",
            "--latency",
            f"--script={script.name}",
            url,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + timeout + 30,
            env={**os.environ, "LC_ALL": "C"},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or done.stderr.strip():  # a Lua error leaves status 0
        raise RuntimeError(f"wrk exited with status {done.returncode}: {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    result.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def wrk_version() -> str:
    done = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "wrk"


def summary(result: WrkResult) -> dict[str, Any]:
    return {
        "rps": round(result.rps, 1),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "requests": result.requests,
    }


# -- a trivial server: wrk's own ceiling on this machine ---------------------------------

_CANNED = b'{"jsonrpc":"2.0","result":42,"id":1}'
_CANNED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_CANNED)).encode()
    + b"\r\n\r\n"
    + _CANNED
)


class _Trivial:
    """asyncio Protocol answering every HTTP/1.1 request with one canned JSON-RPC answer
    (keep-alive, pipelining-safe): no framework, no broker, nothing to wait for."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            answers += 1
        self.buffer = buffer
        if answers:
            self.transport.write(_CANNED_RESPONSE * answers)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def eof_received(self) -> None:
        self.transport.close()


def serve_trivial(port: int) -> None:
    import asyncio
    import signal

    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(_Trivial, "127.0.0.1", port, backlog=2048)
        print("ready", flush=True)
        async with server:
            await stop.wait()

    uvloop.run(main())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.gateway.load")
    parser.add_argument("role", choices=["trivial"])
    parser.add_argument("--port", type=int, required=True)
    serve_trivial(parser.parse_args().port)
