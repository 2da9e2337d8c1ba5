"""streamlit-launch: Streamlit's command line, with Nagle's algorithm off on its server's connections.

Every app image runs `python streamlit_launch.py run <entrypoint> --server.*=...` instead of
`streamlit run ...`; the arguments are Streamlit's own.

Why: Streamlit's server (1.67, Starlette on uvicorn) binds its listening socket itself, with
`socket.socket(family)`, so its protocol number is 0. Accepted connections inherit it, and asyncio sets
TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP. Nagle's algorithm stays on: on a
keep-alive connection each response after the first holds its body back until the client's delayed ACK,
40 ms on Linux. A Streamlit page fetches about 60 files over six connections: on localhost that was
0.28 s of every cold page load (benchmarks/component_bench.py measures both ways). uvicorn has the same
bug on its own pre-bound sockets (Kludex/uvicorn#3149).

Linux copies TCP_NODELAY from a listening socket to the sockets it accepts, so setting it once on the
listener is enough. When Streamlit's internals differ from what this expects, Streamlit runs unchanged
and a warning says so.
"""

from __future__ import annotations

import importlib
import socket
import sys
import warnings
from collections.abc import Callable

SERVER_MODULE = "streamlit.web.server.starlette.starlette_server"


def _with_nodelay(bind_socket: Callable[..., socket.socket]) -> Callable[..., socket.socket]:
    def bind_socket_with_nodelay(*args: object, **kwargs: object) -> socket.socket:
        listener = bind_socket(*args, **kwargs)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener

    return bind_socket_with_nodelay


def disable_nagle() -> bool:
    """Make Streamlit's server bind a listener with TCP_NODELAY set; False when it cannot."""
    try:
        server = importlib.import_module(SERVER_MODULE)
        bind_socket = server._bind_socket
    except (ImportError, AttributeError) as error:
        warnings.warn(f"streamlit-launch: Nagle's algorithm stays on ({error})", RuntimeWarning, stacklevel=2)
        return False
    server._bind_socket = _with_nodelay(bind_socket)
    return True


def main() -> int:
    disable_nagle()
    from streamlit.web.cli import main as streamlit_main

    sys.argv[0] = "streamlit"
    return streamlit_main()


if __name__ == "__main__":
    sys.exit(main())
