"""A policy server and client over a local TCP socket, so a robot loop keeps acting while the
next action chunk is computed.

The server loads a ``GeoVLAPolicy`` once and answers ``predict_action``, ``observe`` and ``reset``
requests in the wire format of ``policies.wire``; ``policies.policy_client.PolicyClient`` mirrors
the policy's robot API (``predict_action(observation, noise) -> [H, A]``, ``observe``, ``reset()``)
and adds ``submit`` (the same request in a background thread, as a ``Future``).
Each connection is one robot with its own observation history, so robots sharing a server never
see each other's frames.

Bounds a peer cannot push the server past:

* memory: a connection's buffers grow with the bytes of its current message that actually
  arrived (at most ``max(RECV_CHUNK_BYTES, 2 × received)`` per header or array), never with what
  a header merely claims; a message is at most ``MAX_HEADER_BYTES`` of header and
  ``MAX_PAYLOAD_BYTES`` of arrays;
* time: ``idle_timeout`` seconds for the first byte of the next request, then ``message_timeout``
  seconds for the whole request (and for sending a reply); a peer past either gets a
  ``ProtocolError`` reply and the connection is closed;
* connections: at most ``max_connections`` at once (one thread each); one more gets a
  ``TooManyConnections`` reply and is closed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from policies.modeling_geovla import GeoVLAPolicy
from policies.wire import ProtocolError, Timeouts, encode_message, recv_message

log = logging.getLogger(__name__)


@dataclass
class RobotSession:
    """One connection's robot: its observation history (None until its first request), which
    the server swaps into the policy for that connection's requests."""

    history: deque[torch.Tensor] | None = None


@contextmanager
def _robot_history(policy: GeoVLAPolicy, robot: RobotSession) -> Iterator[None]:
    """Run with ``robot``'s history in ``policy``; then keep what the request made of it (more
    frames, or a reset) for the robot's next request, and put the policy's own history back."""
    own = policy.swap_history(robot.history)
    try:
        yield
    finally:
        robot.history = policy.swap_history(own)


class PolicyServer:
    """Serves one policy to up to ``max_connections`` clients at once, each a robot with its own
    observation history; requests run one at a time (a lock), since they share the policy.

    Requests: ``{"op": "predict_action", "observation": obs, "noise": [1, H, max_action_dim] or
    None}`` → ``{"ok": True, "actions": [H, A]}``; ``{"op": "observe", "observation": obs}`` and
    ``{"op": "reset"}`` → ``{"ok": True}``. A
    failure → ``{"ok": False, "error": type name, "message": str}``; the connection stays open,
    except after a ``ProtocolError`` (a malformed or too slow message), which closes it.

    ``idle_timeout``: seconds a connection may wait between requests; ``message_timeout``:
    seconds for a request to arrive whole from its first byte, and for a reply to be sent (None:
    no limit). ``max_connections``: connections served at once; one more is refused.
    """

    def __init__(self, policy: GeoVLAPolicy, host: str = "127.0.0.1", port: int = 0, *,
                 idle_timeout: float | None = 300.0, message_timeout: float | None = 30.0,
                 max_connections: int = 8) -> None:
        for name, seconds in (("idle_timeout", idle_timeout), ("message_timeout", message_timeout)):
            if seconds is not None and not seconds > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None (no limit), got {seconds}")
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
        self.policy = policy
        self.timeouts = Timeouts(idle_timeout, message_timeout)
        self._lock = threading.Lock()
        self._server = _ThreadingServer((host, port), self, max_connections)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on (the real port when constructed with 0)."""
        host, port = self._server.server_address[:2]
        return host, port

    def serve_forever(self) -> None:
        """Answer requests in this thread until interrupted (Ctrl-C), then close every connection
        and the listening socket."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def start(self) -> "PolicyServer":
        """Answer requests in a background thread (stop it with ``shutdown``)."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="policy-server", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop the background thread of ``start``, close the listening socket and every
        connection, and wait for the connections' threads (a request being computed finishes;
        its reply is dropped)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "PolicyServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def handle(self, request: Any, robot: RobotSession) -> dict[str, Any]:
        """The reply to one decoded request from the connection of ``robot``."""
        op = request.get("op") if isinstance(request, dict) else None
        try:
            if op not in ("predict_action", "observe", "reset"):
                raise ValueError(f"unknown request op {op!r}; expected 'predict_action', 'observe' or 'reset'")
            with self._lock, _robot_history(self.policy, robot):
                return self._run(op, request)
        except Exception as error:  # noqa: BLE001  (every failure goes back to the client)
            if not isinstance(error, ValueError):
                log.exception("policy server: %s request failed", op)
            return {"ok": False, "error": type(error).__name__, "message": str(error)}

    def _run(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run a known ``op`` on the policy (under the lock, with the robot's history in place)."""
        if op == "predict_action":
            noise = request.get("noise")
            if noise is not None:
                noise = torch.from_numpy(noise)  # the model moves it to its device
            return {"ok": True, "actions": self.policy.predict_action(request.get("observation"), noise=noise)}
        if op == "observe":
            self.policy.observe(request.get("observation"))
        else:
            self.policy.reset()
        return {"ok": True}


class _ThreadingServer(socketserver.ThreadingTCPServer):
    """One (daemon) thread per connection, at most ``max_connections`` of them. Closing the
    server also closes its connections and waits for their threads, which would otherwise go on
    serving them."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], policy_server: PolicyServer, max_connections: int) -> None:
        self.policy_server = policy_server
        self.max_connections = max_connections
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """Serve the connection in a new thread, or refuse it when ``max_connections`` are open."""
        with self._connections_changed:
            refused = len(self._connections) >= self.max_connections
            if not refused:
                self._connections.add(request)
        if refused:
            self._refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def server_close(self) -> None:
        """Close the listening socket and every connection (their threads' next receive or send
        fails; a request being computed finishes first), and wait for their threads to end."""
        with self._connections_changed:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # the peer already closed it
                    connection.shutdown(socket.SHUT_RDWR)
        super().server_close()
        with self._connections_changed:
            self._connections_changed.wait_for(lambda: not self._connections)

    def _forget(self, request: socket.socket) -> None:
        with self._connections_changed:
            self._connections.discard(request)
            self._connections_changed.notify_all()

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        """Tell a connection beyond ``max_connections`` why it is closed, then close it."""
        log.warning("policy server: refused %s, already serving %d connections", client_address, self.max_connections)
        reply = {"ok": False, "error": "TooManyConnections", "message": (
            f"the policy server already serves its limit of {self.max_connections} connections: close one, "
            f"or start the server with a larger max_connections (--max-connections)")}
        _send_reply(request, reply, timeout=1.0)
        self.shutdown_request(request)


def _send_reply(sock: socket.socket, reply: dict[str, Any], timeout: float | None) -> bool:
    """Send ``reply`` within ``timeout`` seconds; False (logged) when the peer is gone or does
    not read it in time."""
    sock.settimeout(timeout)
    try:
        sock.sendall(encode_message(reply))
    except OSError as error:
        log.info("policy server: could not send a reply (%s); closing the connection", error)
        return False
    return True


class _Handler(socketserver.BaseRequestHandler):
    """One client connection, one robot: answer requests until the client closes the connection,
    sends a malformed message or misses a timeout."""

    server: _ThreadingServer

    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        policy_server = self.server.policy_server
        timeouts, robot = policy_server.timeouts, RobotSession()
        while True:
            try:
                request = recv_message(self.request, timeouts)
            except ProtocolError as error:
                _send_reply(self.request, {"ok": False, "error": "ProtocolError", "message": str(error)},
                            timeouts.message)
                return
            except OSError as error:  # a reset connection, or the server closing
                log.info("policy server: connection from %s ended: %s", self.client_address, error)
                return
            if request is None or not _send_reply(self.request, policy_server.handle(request, robot),
                                                  timeouts.message):
                return
