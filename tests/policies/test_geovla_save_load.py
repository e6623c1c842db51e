"""save_pretrained → from_pretrained gives the same actions for the same noise."""

from __future__ import annotations

import numpy as np
import torch
from lerobot.processor import DeviceProcessorStep
from geovla_helpers import CAMERAS, make_policy

from policies.modeling_geovla import GeoVLAPolicy


def _observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {cam: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for cam in CAMERAS},
        "state": np.array([0.02, -0.03, 0.19, 1.0], dtype=np.float32),
        "instruction": "touch the red ball",
    }


def test_save_load_gives_identical_actions(dataset_meta, batch, tmp_path):
    policy = make_policy(dataset_meta)
    policy.save_pretrained(tmp_path / "policy")
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (tmp_path / "policy" / name).exists(), name
    loaded = GeoVLAPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.config.image_size == 32 and loaded.config.camera_keys == policy.config.camera_keys
    assert loaded.processors is not None

    noise = torch.randn(batch["action"].shape[0], policy.config.chunk_size, policy.config.max_action_dim)
    original = policy.predict_action_chunk(batch, noise=noise)
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), original)
    other = make_policy(dataset_meta, seed=1).predict_action_chunk(batch, noise=noise)
    assert not torch.allclose(other, original)  # the equality above is not trivial

    obs = _observation(0)
    single = noise[:1]
    policy.reset()
    expected = policy.predict_action(obs, noise=single)
    actual = loaded.predict_action(obs, noise=single)
    assert actual.shape == (policy.config.chunk_size, 4) and actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)


def test_loading_moves_the_preprocessor_to_the_policy_device(dataset_meta, tmp_path):
    """A policy saved from a GPU run keeps ``cuda`` in its preprocessor; loading it for a CPU
    must run on the CPU."""
    policy = make_policy(dataset_meta)
    policy.save_pretrained(tmp_path / "policy")
    saved = tmp_path / "policy" / "policy_preprocessor.json"
    saved.write_text(saved.read_text().replace('"device": "cpu"', '"device": "cuda"'))
    loaded = GeoVLAPolicy.from_pretrained(tmp_path / "policy", device="cpu")
    devices = [step.device for step in loaded.processors[0].steps if isinstance(step, DeviceProcessorStep)]
    assert devices == ["cpu"]
    assert loaded.predict_action(_observation(1)).shape == (10, 4)


def test_word_tokenizer_policy_round_trips_and_reads_words(dataset_meta, tmp_path):
    """``tokenizer="word"``: the processor and the LLM share the hashed-word vocabulary, the
    instruction is one token per word, and save → load keeps both."""
    policy = make_policy(dataset_meta, tokenizer="word")
    step = next(s for s in policy.processors[0].steps if hasattr(s, "tokenizer_kind"))
    assert step.tokenizer_kind == "word"
    assert len(step.tokenizer) == policy.model.action_model.fusion.llm.get_input_embeddings().num_embeddings
    assert len(step.tokenizer("touch the red ball")["input_ids"]) == 5  # <bos> + 4 words
    policy.save_pretrained(tmp_path / "policy")
    loaded = GeoVLAPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.config.tokenizer == "word"
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim)
    obs = _observation(2)
    policy.reset()
    np.testing.assert_array_equal(loaded.predict_action(obs, noise=noise), policy.predict_action(obs, noise=noise))
    policy.reset()
    same = policy.predict_action(obs, noise=noise)
    policy.reset()
    other = policy.predict_action(dict(obs, instruction="touch the blue cube"), noise=noise)
    assert not np.allclose(other, same)  # the words reach the model
