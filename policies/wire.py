"""The wire format of the policy server: length-prefixed JSON headers and raw array bytes, no pickle.

Every message is a 4-byte big-endian length, a UTF-8 JSON header, then the raw bytes of each array
the header lists (``dtype`` string such as ``"|u1"`` or ``"<f4"`` and ``shape``). Arrays inside
the JSON tree are the placeholders ``{"__ndarray__": i}``. Only bool, integer and floating dtypes
are accepted, so a peer can send data but never code. Receiving allocates memory only for bytes
that arrived (at most ``max(RECV_CHUNK_BYTES, 2 × received)`` per header or array), never for
what a header merely claims; a message is at most ``MAX_HEADER_BYTES`` of header and
``MAX_PAYLOAD_BYTES`` of arrays.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ARRAY_KEY = "__ndarray__"
MAX_HEADER_BYTES = 16 << 20
MAX_PAYLOAD_BYTES = 1 << 30
MAX_NDIM = 64  # numpy's limit on an array's dimensions
MAX_DEPTH = 100  # nesting of dicts and lists in a header's tree (a robot observation needs 3)
RECV_CHUNK_BYTES = 1 << 18  # a message's first buffer; it grows only as bytes arrive
SAFE_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_LENGTH = struct.Struct("!I")


class ProtocolError(ConnectionError):
    """A malformed message (bad length, JSON, dtype or shape), a peer too slow to send one, or
    a peer that closed the connection mid-message."""


@dataclass(frozen=True)
class Timeouts:
    """How long a server waits on a peer, in seconds (None: no limit)."""

    idle: float | None  # for the first byte of the next message
    message: float | None  # from that byte for the whole message; also for sending a reply


def encode_message(message: dict[str, Any]) -> bytes:
    """One framed message: length, JSON header, raw array bytes. Arrays (numpy or torch) may sit
    anywhere in ``message`` (dicts with str keys, lists, tuples, str, numbers, bool, None)."""
    arrays: list[np.ndarray] = []
    tree = _to_tree(message, arrays)
    table = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    header = json.dumps({"tree": tree, "arrays": table}).encode()
    return b"".join([_LENGTH.pack(len(header)), header, *(a.tobytes() for a in arrays)])


def recv_message(sock: socket.socket, timeouts: Timeouts | None = None) -> dict[str, Any] | None:
    """The next message from ``sock``; None when the peer closed the connection between messages.

    ``timeouts`` (the server's) bound the wait for the message and then for all of it; without
    them the socket's own timeout applies to each receive. Raises ``ProtocolError`` on a
    malformed message or one that misses ``timeouts``."""
    clock = _MessageClock(timeouts) if timeouts is not None else None
    prefix = _recv_exact(sock, _LENGTH.size, clock, "length prefix", allow_eof=True)
    if prefix is None:
        return None
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {length} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(_recv_exact(sock, length, clock, "header").decode())
        tree, table = header["tree"], header["arrays"]
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError) as error:
        raise ProtocolError(f"malformed header: {error}") from error
    if not isinstance(table, list):
        raise ProtocolError(f"header 'arrays' must be a list, got {type(table).__name__}")
    specs = [_array_spec(index, entry) for index, entry in enumerate(table)]
    sizes = [dtype.itemsize * math.prod(shape) for dtype, shape in specs]
    if sum(sizes) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"arrays of {sum(sizes)} bytes in all exceed {MAX_PAYLOAD_BYTES}")
    arrays = [np.frombuffer(_recv_exact(sock, size, clock, f"array {index}"), dtype=dtype).reshape(shape)
              for index, ((dtype, shape), size) in enumerate(zip(specs, sizes))]
    return _from_tree(tree, arrays, depth=0)


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


def _from_tree(tree: Any, arrays: list[np.ndarray], depth: int) -> Any:
    """The header's tree with its placeholders replaced by ``arrays``; a tree nested deeper than
    ``MAX_DEPTH`` is refused here rather than overflowing Python's recursion limit."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"header tree nests deeper than {MAX_DEPTH} dicts and lists")
    if isinstance(tree, dict):
        if set(tree) == {ARRAY_KEY}:
            index = tree[ARRAY_KEY]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise ProtocolError(f"array placeholder {index!r} does not name one of {len(arrays)} arrays")
            return arrays[index]
        return {k: _from_tree(v, arrays, depth + 1) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_from_tree(v, arrays, depth + 1) for v in tree]
    return tree


def _array_spec(index: int, entry: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """Validated ``(dtype, shape)`` of the ``index``-th array of a header: one numpy can build
    from at most ``MAX_PAYLOAD_BYTES`` (checked for all arrays together by the caller)."""
    try:
        name, shape = entry["dtype"], tuple(entry["shape"])
        dtype = np.dtype(name) if isinstance(name, str) else None
    except (KeyError, TypeError) as error:
        raise ProtocolError(f"array {index}: needs a 'dtype' string and a 'shape' list, got {entry!r}") from error
    if dtype is None:
        raise ProtocolError(f"array {index}: 'dtype' must be a string such as '<f4', got {name!r}")
    if dtype.kind not in SAFE_DTYPE_KINDS or dtype.fields is not None:
        raise ProtocolError(f"array {index}: dtype {dtype} is not bool, int, uint or float")
    if not all(type(n) is int and n >= 0 for n in shape):  # not bool either: numpy refuses it
        raise ProtocolError(f"array {index}: shape must be non-negative ints, got {list(shape)}")
    if len(shape) > MAX_NDIM:
        raise ProtocolError(f"array {index}: {len(shape)} dimensions, numpy allows at most {MAX_NDIM}")
    if dtype.itemsize * math.prod(n for n in shape if n) > MAX_PAYLOAD_BYTES:  # numpy refuses these even empty
        raise ProtocolError(f"array {index}: shape {list(shape)} spans more than {MAX_PAYLOAD_BYTES} bytes")
    return dtype, shape


class _MessageClock:
    """The socket timeout of each receive of one message under ``Timeouts``: ``idle`` until its
    first byte arrives, then what is left of ``message`` (counted from that byte)."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.started: float | None = None

    def start(self) -> None:
        """The message's first byte arrived (later calls do nothing)."""
        if self.started is None:
            self.started = time.monotonic()

    def next_timeout(self) -> float | None:
        """Seconds the next receive may wait (None: no limit); raises ``TimeoutError`` once none is left."""
        if self.started is None:
            return self.timeouts.idle
        if self.timeouts.message is None:
            return None
        left = self.started + self.timeouts.message - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def expired(self, part: str, received: int, size: int) -> ProtocolError:
        """The error for a receive that ran out of time (the server sends it, then closes)."""
        if self.started is None:
            return ProtocolError(
                f"no request for {self.timeouts.idle} s: the server closed the idle connection (reconnect "
                f"and reset; the server's idle_timeout / --idle-timeout sets this limit)"
            )
        return ProtocolError(
            f"message incomplete after {self.timeouts.message} s ({received} of {size} bytes of its {part}): "
            f"the server closed the connection (the server's message_timeout / --message-timeout sets this limit)"
        )


def _recv_exact(sock: socket.socket, size: int, clock: _MessageClock | None, part: str,
                allow_eof: bool = False) -> bytearray | None:
    """Exactly ``size`` bytes (a writable buffer). The buffer starts at ``RECV_CHUNK_BYTES`` and
    doubles only when full, so a peer that claims a large ``size`` and sends nothing costs one
    chunk, and one that sent ``n`` bytes at most ``max(RECV_CHUNK_BYTES, 2 n)``. None on a clean
    close before the first byte when ``allow_eof``; ``ProtocolError`` on a close anywhere else or
    when ``clock`` runs out."""
    buffer, received = bytearray(min(size, RECV_CHUNK_BYTES)), 0
    while received < size:
        if received == len(buffer):
            buffer += bytes(min(size, 2 * received) - received)
        try:
            if clock is not None:
                sock.settimeout(clock.next_timeout())
            with memoryview(buffer) as view:
                count = sock.recv_into(view[received:])
        except TimeoutError as error:
            if clock is None:
                raise
            raise clock.expired(part, received, size) from error
        if count == 0:
            if allow_eof and received == 0:
                return None
            raise ProtocolError(f"connection closed after {received} of {size} bytes of the {part}")
        if clock is not None:
            clock.start()
        received += count
    return buffer
