# SPDX-License-Identifier: Apache-2.0
"""``serve()``: load the models, listen with uvicorn, and on SIGTERM or SIGINT drain, free the models and exit 0."""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette

from embellama._config import EngineConfig, ModelConfig
from embellama._engine import EmbeddingEngine
from embellama._server.app import create_app
from embellama._server.schemas import ServerLimits
from embellama._server.state import ServerState

__all__ = ["serve"]

logger = logging.getLogger("embellama.server")


class DrainingServer(uvicorn.Server):  # type: ignore[misc]
    """uvicorn's server; a signal also tells the app to refuse new work while it drains."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.starlette_app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.starlette_app.state.draining:
            logger.warning("received signal %d: finishing the requests received, refusing new ones", sig)
        self.starlette_app.state.draining = True
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv6 when the host has a colon), with TCP_NODELAY."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (else Nagle's algorithm
    # and delayed ACKs add ~40 ms to every response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    models: Sequence[ModelConfig],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    engine_config: EngineConfig | None = None,
    limits: ServerLimits | None = None,
    graceful_timeout: float = 30.0,
    keep_alive: int = 75,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Load the models, serve them until SIGTERM or SIGINT, then drain and free them.

    Parameters
    ----------
    models : sequence of ModelConfig
        The models; the first is the default for requests that name none.
    host, port : str, int
        Where to listen (port 0: a free port, reported to ``ready``).
    api_key : str, optional
        Required as ``Authorization: Bearer <key>`` on ``/v1/*`` when set.
    engine_config : EngineConfig, optional
        The engine's settings (``max_pending``, copies, dynamic batching).
    limits : ServerLimits, optional
        Request size limits.
    graceful_timeout : float, optional
        Seconds the requests received may take to finish once a signal came.
    keep_alive : int, optional
        Seconds an idle keep-alive connection stays open (nginx's upstream default is 60 s: keep it longer).
    ready : callable, optional
        Called with the server's URL once it listens.

    Returns
    -------
    int
        0 after a clean shutdown (also on SIGTERM).

    Raises
    ------
    ConfigurationError, ModelNotFoundError, ModelLoadError
        A model could not be loaded.
    OSError
        The address could not be bound.
    """
    config = engine_config or EngineConfig()
    engine = EmbeddingEngine(config, models=list(models))
    terminated: list[int] = []
    previous = None
    state: ServerState | None = None
    try:
        app = create_app(engine, api_key=api_key, limits=limits)
        state = app.state.server
        sock = bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}"
        uv_config = uvicorn.Config(
            app,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=max(1, math.ceil(graceful_timeout)),
            # uvicorn's 5 s closes idle keep-alive connections that a busy client (or a proxy's pool) is about
            # to reuse; a request sent as the server closes one fails on the client
            timeout_keep_alive=keep_alive,
            access_log=logger.isEnabledFor(logging.INFO),
            server_header=False,
        )
        server = DrainingServer(uv_config, app)
        if threading.current_thread() is threading.main_thread():
            # uvicorn raises the signal again once it has drained; this handler takes it, so SIGTERM exits 0
            previous = signal.signal(signal.SIGTERM, lambda sig, frame: terminated.append(sig))
        logger.info("serving %s on %s", ", ".join(engine.models), url)
        if ready is not None:
            ready(url)
        server.run(sockets=[sock])
    finally:
        engine.close()
        if state is not None:
            state.close()
        if previous is not None:  # after the models are freed: a second SIGTERM meanwhile is taken too
            signal.signal(signal.SIGTERM, previous)
    logger.info("server stopped%s", " (SIGTERM)" if terminated else "")
    return 0
