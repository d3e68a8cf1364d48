"""Running an HTTP server process: bind first (a taken port fails before any model loads), then HTTP on
a thread and the model's work loop on the main thread. Shared by `mtpeft serve` and `mtpeft lm-serve`.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
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


def serve_on_main_thread(server: Any, listener: socket.socket, batcher: Any) -> None:
    """HTTP on a thread, the model on this (main) thread (serve/batcher.py's run_forever says why).

    uvicorn installs no signal handlers off the main thread, so Ctrl-C and SIGTERM arrive here: they
    stop the inference loop, then the HTTP server finishes its open requests and exits (status 0).
    """
    http = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="mtpeft-http")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    http.start()
    try:
        watcher = threading.Thread(target=_stop_when_done, args=(http, batcher), daemon=True)
        watcher.start()  # if uvicorn stops on its own (a startup error), stop the inference loop too
        batcher.run_forever()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        batcher.stop()
        server.should_exit = True
        http.join(15)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_when_done(http: threading.Thread, batcher: Any) -> None:
    http.join()
    batcher.stop()
