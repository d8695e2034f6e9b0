"""F, the floor: a grpc.aio Authorization server whose handler returns a
constant allow without parsing the request or doing any I/O. Whatever the
sidecar costs above this is the sidecar's own.

``python -m bench.floor --port N [--loop uvloop]``: prints ``calls N`` (how
many checks it has answered) on SIGUSR1 and when it stops on SIGTERM. It runs
on asyncio's own loop unless told to run on uvloop, as the sidecar does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
import uvloop

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse, OkHttpResponse
from sidecar._proto.google.rpc.status_pb2 import Status

SERVICE = "envoy.service.auth.v3.Authorization"
_ALLOW = CheckResponse(status=Status(code=0), ok_response=OkHttpResponse()).SerializeToString()


class Floor:
    def __init__(self) -> None:
        self.calls = 0

    async def check(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.calls += 1
        return _ALLOW

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        return grpc.method_handlers_generic_handler(
            SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )


async def serve(port: int) -> int:
    floor = Floor()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([floor.handler()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"calls {floor.calls}", flush=True))
    await stop.wait()
    await server.stop(1.0)
    return floor.calls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    calls = run(serve(args.port))
    print(f"calls {calls}", flush=True)


if __name__ == "__main__":
    main()
