"""Serve an ASGI app the way `rushgate serve` runs uvicorn, so the comparison apps get the same server.

``python -m benchmarks.uvicorn_serve --port P --workers N [--factory] module:app``

uvicorn's command line cannot name a protocol class, and rushgate serve runs uvicorn's
httptools protocol over a turn-buffered transport (rushgate/http_protocol.py), which sends
each response in one system call. The bare and row-lock apps are served through this
module with exactly that configuration (uvloop, the same protocol, no access log, backlog
4096, a SO_REUSEPORT socket per worker: rushgate/serving.py), so the ratios compare the apps and not two server set-ups.
"""

from __future__ import annotations

import argparse

from rushgate.serving import serve_uvicorn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.uvicorn_serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--factory", action="store_true")
    parser.add_argument("target", help="module:attribute of the ASGI app (or of its factory with --factory)")
    arguments = parser.parse_args(argv)
    return serve_uvicorn(
        arguments.target, factory=arguments.factory, host=arguments.host, port=arguments.port, workers=arguments.workers
    )


if __name__ == "__main__":
    raise SystemExit(main())
