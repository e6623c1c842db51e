"""Policy server and client on loopback: the same actions as the policy in-process, reset, errors,
background requests, and a wire format that carries arrays but never code."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from geovla_helpers import CAMERAS, make_policy

from policies.modeling_geovla import GeoVLAPolicy
from policies.serving import PolicyClient, PolicyServer, ProtocolError, encode_message, recv_message


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


def test_server_answers_a_malformed_request_and_keeps_serving(server):
    with socket.create_connection(server.address, timeout=30) as raw:
        raw.sendall(struct.pack("!I", 5) + b"{oops")
        reply = recv_message(raw)
    assert reply["ok"] is False and reply["error"] == "ProtocolError"
    with PolicyClient(*server.address) as client:
        client.reset()
        assert client.predict_action(_observation(1)).shape == (10, 4)


def test_serve_policy_script(local_policy, saved_dir):
    """``scripts/serve_policy.py`` reports its port, serves the saved policy, and stops on SIGTERM."""
    script = Path(__file__).parents[2] / "scripts" / "serve_policy.py"
    command = [sys.executable, str(script), "--policy", str(saved_dir), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        ready = next(json.loads(line) for line in process.stdout if line.startswith("{"))
        port = ready["port"]
        assert ready["dtype"] == "float32"
        noise = _noise(local_policy, 11)
        local_policy.reset()
        with PolicyClient("127.0.0.1", port) as client:
            np.testing.assert_array_equal(client.predict_action(_observation(4), noise=noise),
                                          local_policy.predict_action(_observation(4), noise=noise))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
