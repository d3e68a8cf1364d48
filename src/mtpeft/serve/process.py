"""Running an HTTP server process: bind first (a taken port fails before any model loads), then HTTP on
a thread and the model's work loop on the main thread. Shared by `mtpeft serve` and `mtpeft lm-serve`.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from typing import Any

from mtpeft.errors import InputError


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as err:
        listener.close()
        raise InputError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from None
    listener.listen(2048)
    return listener


def serve_on_main_thread(server: Any, listener: socket.socket, batcher: Any, grace_s: float = 10.0) -> None:
    """HTTP on a thread, the model on this (main) thread (serve/batcher.py's run_forever says why).

    uvicorn installs no signal handlers off the main thread, so Ctrl-C and SIGTERM arrive here, both as
    KeyboardInterrupt: the inference loop stops, every request still waiting is answered 503 at once (one
    line says how many), then uvicorn finishes and exits; within `grace_s` whatever is left, and status 0.
    A second Ctrl-C stops at once (Python's default handler is back by then).
    """
    # daemon: an HTTP thread that does not finish within the grace cannot keep the process alive.
    http = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="mtpeft-http", daemon=True
    )
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    http.start()
    try:
        watcher = threading.Thread(target=_stop_when_done, args=(http, batcher), daemon=True)
        watcher.start()  # if uvicorn stops on its own (a startup error), stop the inference loop too
        batcher.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _shut_down(server, http, batcher, grace_s)


def _shut_down(server: Any, http: threading.Thread, batcher: Any, grace_s: float) -> None:
    started = time.monotonic()
    refused = batcher.stop()  # before uvicorn's own shutdown: it waits for the handlers these release
    waiting = f": {refused} waiting request(s) answered 503" if refused else ""
    print(f"stopping{waiting}", file=sys.stderr, flush=True)
    server.should_exit = True
    http.join(max(0.0, grace_s - (time.monotonic() - started)))


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_when_done(http: threading.Thread, batcher: Any) -> None:
    http.join()
    batcher.stop()
