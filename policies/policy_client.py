"""The client of ``policies.serving``: a robot's connection to a policy server, with the policy's
robot API and ``submit`` (the same request in a background thread), so a robot loop keeps acting
while the next action chunk is computed."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from policies.wire import encode_message, recv_message


class PolicyServerError(RuntimeError):
    """The server's policy raised something other than ``ValueError`` (its type and message), or
    the server refused the connection."""


class PolicyClient:
    """Connection to a ``PolicyServer``, with the policy's robot API.

    ``predict_action`` and ``reset`` block; ``submit`` sends the request from a background thread
    and returns a ``Future`` of the actions, so the robot executes the current chunk meanwhile.
    Requests go out in the order they were made (one connection, one worker thread).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, timeout: float | None = 60.0) -> None:
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-client")

    def predict_action(self, observation: dict[str, Any], noise: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Action chunk ``[H, A]`` (``[B, H, A]`` batched) in robot units, as
        ``GeoVLAPolicy.predict_action``; ``noise`` ``[B, H, max_action_dim]`` makes it deterministic.
        Raises ``ValueError`` with the server's message for an invalid observation."""
        return self._request({"op": "predict_action", "observation": observation, "noise": noise})["actions"]

    def submit(self, observation: dict[str, Any], noise: np.ndarray | torch.Tensor | None = None) -> Future:
        """``predict_action`` in the background: a ``Future`` whose result is the ``[H, A]`` chunk."""
        return self._executor.submit(self.predict_action, observation, noise)

    def observe(self, observation: dict[str, Any]) -> None:
        """Add a control step's observation to this connection's history on the server without
        predicting (``GeoVLAPolicy.observe``): call it on the steps between chunk requests."""
        self._request({"op": "observe", "observation": observation})

    def reset(self) -> None:
        """Clear this connection's observation history on the server (call at episode start)."""
        self._request({"op": "reset"})

    def close(self) -> None:
        """Wait for submitted requests, then close the connection."""
        self._executor.shutdown(wait=True)
        self._socket.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        message = encode_message(request)
        with self._lock:
            try:
                self._socket.sendall(message)
                reply = recv_message(self._socket)
            except OSError:  # a timeout or a broken stream: the next reply could be this one's
                self._socket.close()
                raise
        if reply is None:
            raise ConnectionError("policy server closed the connection")
        if not reply.get("ok"):
            if reply.get("error") == "ValueError":
                raise ValueError(reply["message"])
            raise PolicyServerError(f"{reply.get('error')}: {reply.get('message')}")
        return reply
