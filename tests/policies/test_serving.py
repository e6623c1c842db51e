"""Policy server and client on loopback: the same actions as the policy in-process, reset, errors,
background requests, a wire format that carries arrays but never code, one history per robot, and
bounds on what a hostile peer can make the server hold (memory, time, connections, threads)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from geovla_helpers import CAMERAS, make_policy

from policies.modeling_geovla import GeoVLAPolicy
from policies.policy_client import PolicyClient, PolicyServerError
from policies.serving import PolicyServer
from policies.wire import MAX_PAYLOAD_BYTES, ProtocolError, encode_message, recv_message

SCRIPT_MESSAGE_TIMEOUT = 3.0  # seconds, for the served script (the in-process servers take less)


@pytest.fixture(scope="module")
def local_policy(dataset_meta):
    """The in-process reference."""
    return make_policy(dataset_meta)


@pytest.fixture(scope="module")
def saved_dir(local_policy, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("served") / "policy"
    local_policy.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def server(saved_dir):
    """A server on a free loopback port running a copy of ``local_policy`` loaded from disk."""
    with PolicyServer(GeoVLAPolicy.from_pretrained(saved_dir), port=0) as server:
        yield server


@pytest.fixture()
def client(server):
    with PolicyClient(*server.address) as client:
        client.reset()
        yield client


@pytest.fixture(scope="module")
def served_script(saved_dir):
    """``scripts/serve_policy.py`` serving the saved policy in a subprocess: yields ``(process,
    port)``; afterwards checks that SIGTERM stops it cleanly (exit status 0)."""
    script = Path(__file__).parents[2] / "scripts" / "serve_policy.py"
    command = [sys.executable, str(script), "--policy", str(saved_dir), "--port", "0",
               "--message-timeout", str(SCRIPT_MESSAGE_TIMEOUT), "--max-connections", "4"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        ready = next(json.loads(line) for line in process.stdout if line.startswith("{"))
        assert ready["dtype"] == "float32" and ready["max_connections"] == 4
        assert ready["message_timeout"] == SCRIPT_MESSAGE_TIMEOUT and ready["idle_timeout"] == 300.0
        yield process, ready["port"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def _observation(seed: int, cameras=CAMERAS) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {cam: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for cam in cameras},
        "state": np.array([0.02, -0.03, 0.19, 1.0], dtype=np.float32),
        "instruction": "touch the red ball",
    }


def _noise(policy: GeoVLAPolicy, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=generator)


def test_served_actions_equal_in_process_actions(local_policy, client):
    local_policy.reset()
    for step in range(3):  # the history advances the same way on both sides
        noise = _noise(local_policy, step)
        expected = local_policy.predict_action(_observation(step), noise=noise)
        actual = client.predict_action(_observation(step), noise=noise.numpy())
        assert actual.shape == (10, 4) and actual.dtype == np.float32
        np.testing.assert_array_equal(actual, expected)


def test_reset_clears_the_server_history(local_policy, client):
    noise = _noise(local_policy, 7)
    local_policy.reset()
    fresh = local_policy.predict_action(_observation(2), noise=noise)
    client.predict_action(_observation(0), noise=noise)
    continued = client.predict_action(_observation(2), noise=noise)
    client.reset()
    np.testing.assert_array_equal(client.predict_action(_observation(2), noise=noise), fresh)
    assert not np.array_equal(continued, fresh)  # the history matters, so the reset did something


def test_observe_fills_the_history_without_predicting(local_policy, client):
    """observe(o0) then predict_action(o1) is predict_action(o0) then predict_action(o1),
    in process and over the socket, and differs from predicting on o1 alone."""
    noise = _noise(local_policy, 4)
    local_policy.reset()
    local_policy.predict_action(_observation(0), noise=noise)
    expected = local_policy.predict_action(_observation(1), noise=noise)
    local_policy.reset()
    local_policy.observe(_observation(0))
    np.testing.assert_array_equal(local_policy.predict_action(_observation(1), noise=noise), expected)
    client.reset()
    client.observe(_observation(0))
    np.testing.assert_array_equal(client.predict_action(_observation(1), noise=noise), expected)
    local_policy.reset()
    assert not np.array_equal(local_policy.predict_action(_observation(1), noise=noise), expected)
    with pytest.raises(ValueError, match="camera 'wrist' is missing"):
        client.observe(_observation(0, cameras=CAMERAS[:3]))


def test_invalid_observation_comes_back_as_value_error(local_policy, client):
    with pytest.raises(ValueError, match="camera 'wrist' is missing"):
        client.predict_action(_observation(0, cameras=CAMERAS[:3]))
    with pytest.raises(ValueError, match=r"noise must be \(1, 10, 8\)"):
        client.predict_action(_observation(0), noise=np.zeros((1, 3, 8), np.float32))
    assert client.predict_action(_observation(0)).shape == (10, 4)  # the connection is still usable


def test_submit_returns_the_same_actions(local_policy, client):
    noise = _noise(local_policy, 3)
    local_policy.reset()
    expected = [local_policy.predict_action(_observation(s), noise=noise) for s in range(2)]
    futures = [client.submit(_observation(s), noise=noise) for s in range(2)]  # sent in order
    for future, chunk in zip(futures, expected):
        np.testing.assert_array_equal(future.result(timeout=60), chunk)


def test_wire_format_round_trips_arrays_and_refuses_objects():
    message = {
        "uint8": np.arange(12, dtype=np.uint8).reshape(2, 3, 2),
        "nested": [np.float64(1.5), {"t": torch.ones(2, dtype=torch.float16)}, (None, True, "x")],
        "empty": np.zeros((0, 3), np.int64),
    }
    left, right = socket.socketpair()
    with left, right:
        left.sendall(encode_message(message) + encode_message({}))
        decoded = recv_message(right)
        assert recv_message(right) == {}
        left.close()
        assert recv_message(right) is None  # a clean close between messages

    np.testing.assert_array_equal(decoded["uint8"], message["uint8"])
    assert decoded["nested"][0] == 1.5 and decoded["nested"][2] == [None, True, "x"]
    assert decoded["nested"][1]["t"].dtype == np.float16 and decoded["empty"].shape == (0, 3)
    with pytest.raises(ValueError, match="dtype object"):
        encode_message({"x": np.array([object()])})

    header = json.dumps({"tree": {"__ndarray__": 0}, "arrays": [{"dtype": "|O", "shape": [1]}]}).encode()
    left, right = socket.socketpair()
    with left, right:
        left.sendall(struct.pack("!I", len(header)) + header + bytes(8))
        with pytest.raises(ProtocolError, match="dtype object is not bool, int, uint or float"):
            recv_message(right)


def _framed(header: dict | str, payload: bytes = b"") -> bytes:
    """A message with a hand-written header (a dict, or raw JSON text)."""
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("!I", len(text.encode())) + text.encode() + payload


MALFORMED = {
    "bad JSON": (_framed("{oops"), "malformed header"),
    "65 dimensions": (_framed({"tree": {"__ndarray__": 0}, "arrays": [{"dtype": "<f4", "shape": [1] * 65}]},
                              bytes(4)), "65 dimensions, numpy allows at most 64"),
    "empty with huge axes": (_framed({"tree": 0, "arrays": [{"dtype": "|u1", "shape": [0, 2**40, 2**40]}]}),
                             "spans more than"),
    "1200 nested lists": (_framed('{"tree": ' + "[" * 1200 + "]" * 1200 + ', "arrays": []}'), "nests deeper than 100"),
    "boolean axis": (_framed({"tree": 0, "arrays": [{"dtype": "<f8", "shape": [True]}]}, bytes(8)),
                     "shape must be non-negative ints"),
    "dtype not a string": (_framed({"tree": 0, "arrays": [{"dtype": ["a", "<f4"], "shape": [1]}]}, bytes(4)),
                           "'dtype' must be a string"),
}


@pytest.mark.parametrize("message, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_server_answers_a_malformed_request_and_keeps_serving(server, message, expected):
    """Every malformed message gets a ``ProtocolError`` reply naming the problem, the connection
    is closed (its stream can no longer be trusted), and the server serves the next client."""
    with socket.create_connection(server.address, timeout=30) as raw:
        raw.sendall(message)
        reply = recv_message(raw)
        assert reply is not None, "the server closed the connection without a reply"
        assert recv_message(raw) is None  # then the server closed the connection
    assert reply["ok"] is False and reply["error"] == "ProtocolError" and expected in reply["message"]
    with PolicyClient(*server.address) as client:
        client.reset()
        assert client.predict_action(_observation(1)).shape == (10, 4)


def test_serve_policy_script(local_policy, served_script):
    """``scripts/serve_policy.py`` reports its port and limits and serves the saved policy (the
    fixture checks that it stops on SIGTERM)."""
    _, port = served_script
    noise = _noise(local_policy, 11)
    local_policy.reset()
    with PolicyClient("127.0.0.1", port) as client:
        np.testing.assert_array_equal(client.predict_action(_observation(4), noise=noise),
                                      local_policy.predict_action(_observation(4), noise=noise))


def _rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` of /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def _closing_reply(peer: socket.socket) -> tuple[dict, float]:
    """The reply the server sends before it closes ``peer`` (asserting the close), and when it came."""
    reply = recv_message(peer)
    arrived = time.monotonic()
    assert reply is not None, "the server closed the connection without a reply"
    assert recv_message(peer) is None
    return reply, arrived


def test_claimed_sizes_cost_the_server_no_memory_until_sent(served_script):
    """A header that claims a 1 GiB array, and a length prefix that claims a 16 MiB header, with
    nothing after them: the server's resident memory grows by far less than either claim
    (before the fix: +1 GiB and +16 MiB, held until the peer left), and each connection gets a
    ``ProtocolError`` reply and is closed once the message timeout passes."""
    process, port = served_script
    array_claim = _framed({"tree": {"__ndarray__": 0}, "arrays": [{"dtype": "|u1", "shape": [MAX_PAYLOAD_BYTES]}]})
    header_claim = struct.pack("!I", 16 << 20)
    before = _rss_bytes(process.pid)
    peers = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
    try:
        sent = time.monotonic()
        for peer, claim in zip(peers, (array_claim, header_claim)):
            peer.sendall(claim)
        growth = 0
        while time.monotonic() - sent < SCRIPT_MESSAGE_TIMEOUT / 2:  # the server has read both claims by now
            growth = max(growth, _rss_bytes(process.pid) - before)
            time.sleep(0.05)
        assert growth < 8 << 20, f"server memory grew by {growth / 2**20:.1f} MiB on claims alone"
        for peer in peers:
            reply, _ = _closing_reply(peer)
            assert reply["error"] == "ProtocolError"
            assert f"incomplete after {SCRIPT_MESSAGE_TIMEOUT} s" in reply["message"]
        assert SCRIPT_MESSAGE_TIMEOUT <= time.monotonic() - sent < SCRIPT_MESSAGE_TIMEOUT + 10
    finally:
        for peer in peers:
            peer.close()


@pytest.fixture()
def strict_server(local_policy):
    """A server with half-second timeouts."""
    with PolicyServer(local_policy, port=0, idle_timeout=0.5, message_timeout=0.5) as server:
        yield server


def test_idle_and_slow_peers_are_closed_after_their_timeouts(strict_server):
    """A peer that sends nothing, one that stops mid-message, and one that trickles a byte at a
    time each get a ``ProtocolError`` reply saying which limit it missed, then the connection
    closes: none can hold a thread (and its buffer) longer than the timeouts allow."""
    request = encode_message({"op": "reset"})
    start = time.monotonic()
    with socket.create_connection(strict_server.address, timeout=30) as idle:
        reply, arrived = _closing_reply(idle)
    assert "no request for 0.5 s" in reply["message"] and 0.5 <= arrived - start < 5
    with socket.create_connection(strict_server.address, timeout=30) as stalled:
        start = time.monotonic()
        stalled.sendall(request[:-2])
        reply, arrived = _closing_reply(stalled)
    assert "incomplete after 0.5 s" in reply["message"] and 0.5 <= arrived - start < 5
    with socket.create_connection(strict_server.address, timeout=30) as trickle:
        start = time.monotonic()
        for byte in request[:-1]:  # one byte every 0.1 s until the reply: each receive is quick, the message is not
            trickle.sendall(bytes([byte]))
            if select.select([trickle], [], [], 0.1)[0]:
                break
        reply, arrived = _closing_reply(trickle)
    assert "incomplete after 0.5 s" in reply["message"] and 0.5 <= arrived - start < 5


@pytest.fixture()
def capped_server(local_policy):
    """A server with room for two connections."""
    with PolicyServer(local_policy, port=0, max_connections=2) as server:
        yield server


def test_connections_beyond_the_cap_are_refused_with_a_reply(capped_server):
    """With ``max_connections=2``, 20 more connections start no thread: each gets a
    ``TooManyConnections`` reply and is closed (``PolicyClient`` raises it); once a served client
    leaves, a new one is served."""
    with pytest.raises(ValueError, match="max_connections must be an int >= 1, got 0"):
        PolicyServer(capped_server.policy, max_connections=0)
    threads_before = threading.active_count()
    served = [PolicyClient(*capped_server.address) for _ in range(2)]
    for client in served:
        client.reset()
    extra = [socket.create_connection(capped_server.address, timeout=10) for _ in range(20)]
    for peer in extra:
        reply, _ = _closing_reply(peer)
        assert reply["error"] == "TooManyConnections" and "limit of 2 connections" in reply["message"]
        peer.close()
    assert threading.active_count() - threads_before <= 2
    with PolicyClient(*capped_server.address) as refused, pytest.raises(PolicyServerError, match="TooManyConnections"):
        refused.reset()
    served.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the server frees the slot once it sees the close
        try:
            with PolicyClient(*capped_server.address) as client:
                client.reset()
            break
        except (PolicyServerError, OSError):
            assert time.monotonic() < deadline, "no connection slot came free after a client left"
            time.sleep(0.05)
    served[0].close()


def test_shutdown_closes_connected_clients(local_policy):
    """``shutdown`` promptly disconnects an idle client and ends its thread (before, a daemon
    thread went on serving it after the server was shut down)."""
    threads_before = threading.active_count()
    server = PolicyServer(local_policy, port=0, idle_timeout=20).start()
    with socket.create_connection(server.address, timeout=30) as peer:
        peer.sendall(encode_message({"op": "reset"}))
        assert recv_message(peer) == {"ok": True}
        start = time.monotonic()
        server.shutdown()
        assert time.monotonic() - start < 10 and threading.active_count() == threads_before
        assert recv_message(peer) is None


def _robot_steps(policy: GeoVLAPolicy, first_seed: int) -> list[tuple[str, dict, torch.Tensor]]:
    """A robot's requests ``(op, observation, noise)``: resets, observes and predictions."""
    ops = ["reset", "observe", "predict", "predict", "observe", "predict", "reset", "predict"]
    return [(op, _observation(first_seed + i), _noise(policy, first_seed + i)) for i, op in enumerate(ops)]


def _run_step(robot: GeoVLAPolicy | PolicyClient, op: str, observation: dict, noise: torch.Tensor) -> list[np.ndarray]:
    """One request on the policy in-process or over a client: ``[chunk]`` for a prediction, else ``[]``."""
    if op == "predict":
        return [robot.predict_action(observation, noise=noise)]
    if op == "observe":
        robot.observe(observation)
    else:
        robot.reset()
    return []


def test_each_connection_keeps_its_own_history(local_policy, server):
    """Robot A's chunks are the same whether or not robot B's observe, predict and reset requests
    come in between A's on another connection, and equal the policy's in-process chunks for A's
    sequence alone; B's too (before the fix B's frames entered A's history and B's reset cleared it)."""
    steps = {"a": _robot_steps(local_policy, 0), "b": _robot_steps(local_policy, 100)}
    expected = {}
    for robot, robot_steps in steps.items():
        local_policy.reset()
        expected[robot] = [chunk for step in robot_steps for chunk in _run_step(local_policy, *step)]
    with PolicyClient(*server.address) as alone:
        chunks_alone = [chunk for step in steps["a"] for chunk in _run_step(alone, *step)]
    interleaved = {"a": [], "b": []}
    with PolicyClient(*server.address) as client_a, PolicyClient(*server.address) as client_b:
        for step_a, step_b in zip(steps["a"], steps["b"]):
            interleaved["a"] += _run_step(client_a, *step_a)
            interleaved["b"] += _run_step(client_b, *step_b)
    for got, reference in ((chunks_alone, expected["a"]), (interleaved["a"], expected["a"]),
                           (interleaved["b"], expected["b"])):
        assert len(got) == len(reference) == 4
        for chunk, reference_chunk in zip(got, reference):
            np.testing.assert_array_equal(chunk, reference_chunk)
