"""A policy server and client over a local TCP socket, so a robot loop keeps acting while the
next action chunk is computed.

The server loads a ``GeoVLAPolicy`` once and answers ``predict_action``, ``observe`` and ``reset``
requests; the client mirrors the policy's robot API (``predict_action(observation, noise) -> [H, A]``,
``observe``, ``reset()``) and adds ``submit`` (the same request in a background thread, as a ``Future``).

Wire format (standard library only, no pickle): every message is a 4-byte big-endian length, a
UTF-8 JSON header, then the raw bytes of each array the header lists (``dtype`` string such as
``"|u1"`` or ``"<f4"`` and ``shape``). Arrays inside the JSON tree are the placeholders
``{"__ndarray__": i}``. Only bool, integer and floating dtypes are accepted, and the header
states every size before anything is allocated, so a peer can send data but never code.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import socketserver
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from policies.modeling_geovla import GeoVLAPolicy

ARRAY_KEY = "__ndarray__"
MAX_HEADER_BYTES = 16 << 20
MAX_PAYLOAD_BYTES = 1 << 30
SAFE_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_LENGTH = struct.Struct("!I")

log = logging.getLogger(__name__)


class ProtocolError(ConnectionError):
    """A malformed message (bad length, JSON, dtype or shape), or the peer closed mid-message."""


class PolicyServerError(RuntimeError):
    """The server's policy raised something other than ``ValueError`` (its type and message)."""


# ------------------------------------------------------------------------ wire format
def encode_message(message: dict[str, Any]) -> bytes:
    """One framed message: length, JSON header, raw array bytes. Arrays (numpy or torch) may sit
    anywhere in ``message`` (dicts with str keys, lists, tuples, str, numbers, bool, None)."""
    arrays: list[np.ndarray] = []
    tree = _to_tree(message, arrays)
    table = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    header = json.dumps({"tree": tree, "arrays": table}).encode()
    return b"".join([_LENGTH.pack(len(header)), header, *(a.tobytes() for a in arrays)])


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message from ``sock``; None when the peer closed the connection between messages.
    Raises ``ProtocolError`` on a malformed message."""
    prefix = _recv_exact(sock, _LENGTH.size, allow_eof=True)
    if prefix is None:
        return None
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {length} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(_recv_exact(sock, length).decode())
        tree, table = header["tree"], header["arrays"]
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError) as error:
        raise ProtocolError(f"malformed header: {error}") from error
    if not isinstance(table, list):
        raise ProtocolError(f"header 'arrays' must be a list, got {type(table).__name__}")
    specs = [_array_spec(index, entry) for index, entry in enumerate(table)]
    sizes = [dtype.itemsize * math.prod(shape) for dtype, shape in specs]
    if sum(sizes) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"arrays of {sum(sizes)} bytes in all exceed {MAX_PAYLOAD_BYTES}")
    arrays = [np.frombuffer(_recv_exact(sock, size), dtype=dtype).reshape(shape)
              for (dtype, shape), size in zip(specs, sizes)]
    return _from_tree(tree, arrays)


def _to_tree(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in SAFE_DTYPE_KINDS:
            raise ValueError(f"cannot send an array of dtype {value.dtype} (only bool, int, uint, float)")
        arrays.append(np.ascontiguousarray(value))
        return {ARRAY_KEY: len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value) or ARRAY_KEY in value:
            raise ValueError(f"dict keys must be str other than {ARRAY_KEY!r}, got {list(value)}")
        return {k: _to_tree(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_tree(v, arrays) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"cannot send a value of type {type(value).__name__}")


def _from_tree(tree: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {ARRAY_KEY}:
            index = tree[ARRAY_KEY]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise ProtocolError(f"array placeholder {index!r} does not name one of {len(arrays)} arrays")
            return arrays[index]
        return {k: _from_tree(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_from_tree(v, arrays) for v in tree]
    return tree


def _array_spec(index: int, entry: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """Validated ``(dtype, shape)`` of the ``index``-th array of a header."""
    try:
        dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
    except (KeyError, TypeError) as error:
        raise ProtocolError(f"array {index}: needs a 'dtype' string and a 'shape' list, got {entry!r}") from error
    if dtype.kind not in SAFE_DTYPE_KINDS or dtype.fields is not None:
        raise ProtocolError(f"array {index}: dtype {dtype} is not bool, int, uint or float")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError(f"array {index}: shape must be non-negative ints, got {list(shape)}")
    return dtype, shape


def _recv_exact(sock: socket.socket, size: int, allow_eof: bool = False) -> bytearray | None:
    """Exactly ``size`` bytes (a writable buffer). None on a clean close before the first byte
    when ``allow_eof``; ``ProtocolError`` on a close anywhere else."""
    buffer = bytearray(size)
    view, received = memoryview(buffer), 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            if allow_eof and received == 0:
                return None
            raise ProtocolError(f"connection closed after {received} of {size} bytes")
        received += count
    return buffer


# ------------------------------------------------------------------------------ server
class PolicyServer:
    """Serves one policy to any number of clients; requests run one at a time (a lock), since
    the policy keeps one observation history.

    Requests: ``{"op": "predict_action", "observation": obs, "noise": [1, H, max_action_dim] or
    None}`` → ``{"ok": True, "actions": [H, A]}``; ``{"op": "observe", "observation": obs}`` and
    ``{"op": "reset"}`` → ``{"ok": True}``. A
    failure → ``{"ok": False, "error": type name, "message": str}``; the connection stays open.
    """

    def __init__(self, policy: GeoVLAPolicy, host: str = "127.0.0.1", port: int = 0) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._server = _ThreadingServer((host, port), _Handler)
        self._server.policy_server = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on (the real port when constructed with 0)."""
        host, port = self._server.server_address[:2]
        return host, port

    def serve_forever(self) -> None:
        """Answer requests in this thread until interrupted (Ctrl-C), then close the listening socket."""
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
        """Stop the background thread of ``start`` and close the listening socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "PolicyServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The reply to one decoded request."""
        op = request.get("op") if isinstance(request, dict) else None
        try:
            with self._lock:
                if op == "predict_action":
                    noise = request.get("noise")
                    if noise is not None:
                        noise = torch.from_numpy(noise)  # the model moves it to its device
                    return {"ok": True, "actions": self.policy.predict_action(request.get("observation"), noise=noise)}
                if op == "observe":
                    self.policy.observe(request.get("observation"))
                    return {"ok": True}
                if op == "reset":
                    self.policy.reset()
                    return {"ok": True}
            raise ValueError(f"unknown request op {op!r}; expected 'predict_action', 'observe' or 'reset'")
        except Exception as error:  # noqa: BLE001  (every failure goes back to the client)
            if not isinstance(error, ValueError):
                log.exception("policy server: %s request failed", op)
            return {"ok": False, "error": type(error).__name__, "message": str(error)}


class _ThreadingServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    policy_server: PolicyServer


class _Handler(socketserver.BaseRequestHandler):
    """One client connection: answer requests until the client closes it."""

    server: _ThreadingServer

    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                request = recv_message(self.request)
            except ProtocolError as error:
                self.request.sendall(encode_message({"ok": False, "error": "ProtocolError", "message": str(error)}))
                return
            if request is None:
                return
            self.request.sendall(encode_message(self.server.policy_server.handle(request)))


# ------------------------------------------------------------------------------ client
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
        """Add a control step's observation to the server policy's history without predicting
        (``GeoVLAPolicy.observe``): call it on the steps between chunk requests."""
        self._request({"op": "observe", "observation": observation})

    def reset(self) -> None:
        """Clear the server policy's observation history (call at episode start)."""
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
