"""Loading and acting are strict and never silent: incomplete checkpoints, NaN actions, cut
instructions, a changed batch size, failed calls, special-token text, odd numpy layouts and
incomplete policy directories each raise (or warn) naming what is wrong, or are handled."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import lerobot.envs
import numpy as np
import pytest
import torch
from geovla_helpers import CAMERAS, make_policy
from safetensors.torch import load_file, save_file

from envs.tabletop.env import INSTRUCTION_TEMPLATES
from envs.tabletop.scene import COLOURS, SHAPES
from envs.wrappers import ALOHA_TASKS, PUSHT_INSTRUCTION
from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import GeoVLATokenizerStep

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RED = "move the gripper to the left side of the red cube"
BLUE = "move the gripper to the left side of the blue cube"


@pytest.fixture(scope="module")
def policy(dataset_meta) -> GeoVLAPolicy:
    return make_policy(dataset_meta)


@pytest.fixture()
def saved(policy: GeoVLAPolicy, tmp_path: Path) -> Path:
    policy.save_pretrained(tmp_path / "policy")
    return tmp_path / "policy"


def _observation(seed: int = 0, instruction: str = "touch the blue cube") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": {cam: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for cam in CAMERAS},
        "state": np.array([0.02, -0.03, 0.19, 1.0], dtype=np.float32),
        "instruction": instruction,
    }


def _batched(observation: dict, size: int) -> dict:
    """``observation`` repeated ``size`` times along a leading batch axis."""
    return {"images": {c: np.stack([i] * size) for c, i in observation["images"].items()},
            "state": np.stack([observation["state"]] * size), "instruction": observation["instruction"]}


def _noise(policy: GeoVLAPolicy, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=generator)


def _tokenizer_step(policy: GeoVLAPolicy) -> GeoVLATokenizerStep:
    return next(step for step in policy.processors[0].steps if isinstance(step, GeoVLATokenizerStep))


# ------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_a_checkpoint_whose_tensors_do_not_match_fails_to_load(saved: Path, change: str):
    """LeRobot's default (strict=False) would load it with a logged warning and act with the
    missing tensor at its random init."""
    weights = load_file(saved / "model.safetensors")
    key = "model.action_model.action_out_proj.weight"
    if change == "missing":
        del weights[key]
    else:
        weights["model.extra.weight"] = torch.zeros(2)
        key = "model.extra.weight"
    save_file(weights, saved / "model.safetensors")
    with pytest.raises(RuntimeError, match=rf"(?s){change.capitalize()} key\(s\).*{key}.*saved"):
        GeoVLAPolicy.from_pretrained(saved)


def test_the_legacy_checkpoint_keeps_its_instruction_length(tmp_path: Path):
    """An old checkpoint (0-d scalars, reshaped by a load hook) loads strictly and keeps the
    tokenizer_max_length (32) and the truncation (warn) it was saved with, not the new defaults."""
    with tarfile.open(FIXTURES / "legacy_policy.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    directory = tmp_path / "legacy_policy"
    assert json.loads((directory / "config.json").read_text())["tokenizer_max_length"] == 32
    policy = GeoVLAPolicy.from_pretrained(directory)
    step = _tokenizer_step(policy)
    assert policy.config.tokenizer_max_length == step.max_length == 32 != GeoVLAConfig.tokenizer_max_length
    assert step.truncation == "warn"


def test_a_missing_directory_names_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"'.*/nowhere/policy' does not exist.*config\.json, model\.safetensors"):
        GeoVLAPolicy.from_pretrained(tmp_path / "nowhere" / "policy")
    with pytest.raises(FileNotFoundError, match=r"nowhere/policy' does not exist"):
        GeoVLAPolicy.from_pretrained(str(tmp_path / "nowhere" / "policy"))


def test_a_missing_relative_directory_is_not_only_a_hub_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A bare name could be a Hub repo id: the Hub is asked (offline here), and the error says both."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'no_policy' is no local directory .*/no_policy does not exist.*Hub"):
        GeoVLAPolicy.from_pretrained("no_policy")


@pytest.mark.parametrize("name", ["policy_preprocessor_step_4_normalizer_processor.safetensors",
                                  "policy_postprocessor.json", "model.safetensors"])
def test_a_missing_policy_file_is_named(saved: Path, name: str):
    (saved / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"lacks \['{name}'\].*holds config\.json"):
        GeoVLAPolicy.from_pretrained(saved)


# ------------------------------------------------------------------------------------- acting
def test_nan_weights_raise_instead_of_returning_nan_actions(dataset_meta):
    policy = make_policy(dataset_meta)
    policy.model.action_model.action_out_proj.weight.data[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match=r"NaN/inf actions.*weights hold NaN/inf.*action_out_proj\.weight"):
        policy.predict_action(_observation())
    assert not policy._history  # the failed call left no frame behind


def test_batch_size_change_without_reset_names_reset(policy: GeoVLAPolicy):
    policy.reset()
    policy.predict_action(_observation())
    batched = _batched(_observation(), 2)
    with pytest.raises(ValueError, match=r"\(2, 4, 3, 32, 32\).*\(1, 4, 3, 32, 32\).*policy\.reset\(\)"):
        policy.predict_action(batched)
    policy.reset()
    assert policy.predict_action(batched).shape == (2, 10, 4)


def test_a_failed_call_leaves_the_history_as_it_was(policy: GeoVLAPolicy):
    """Frames 0, (failing 1), 2 act as frames 0, 2: the failed call's frame is not in the history."""
    noise = _noise(policy)
    policy.reset()
    policy.predict_action(_observation(0), noise=noise)
    with pytest.raises(ValueError, match="noise must be"):
        policy.predict_action(_observation(1), noise=noise[:, :3])
    with pytest.raises(ValueError, match=r"policy\.reset\(\)"):
        policy.observe(_batched(_observation(1), 2))
    after_failures = policy.predict_action(_observation(2), noise=noise)
    policy.reset()
    policy.predict_action(_observation(0), noise=noise)
    np.testing.assert_array_equal(after_failures, policy.predict_action(_observation(2), noise=noise))
    policy.reset()
    policy.predict_action(_observation(0), noise=noise)
    policy.observe(_observation(1))
    assert not np.allclose(after_failures, policy.predict_action(_observation(2), noise=noise), atol=1e-4)


@pytest.mark.parametrize("text", ["<image>", "<spatial>", "<bos>", "<pad>"])
def test_special_token_strings_in_an_instruction_are_plain_text(policy: GeoVLAPolicy, text: str):
    instruction = f"touch the {text} cube"
    ids, mask = _tokenizer_step(policy).encode([instruction])
    assert ids[0, 1 : 1 + len(instruction)].tolist() == list(instruction.encode())  # <bos>, then the bytes
    assert int(mask.sum()) == 1 + len(instruction)
    policy.reset()
    assert np.isfinite(policy.predict_action(_observation(instruction=instruction))).all()


def test_flipped_and_big_endian_images_act_like_their_native_copies(policy: GeoVLAPolicy):
    noise = _noise(policy)
    obs = _observation()
    rgb = {c: np.ascontiguousarray(i[..., ::-1]) for c, i in obs["images"].items()}
    floats = {c: i.transpose(2, 0, 1).astype(np.float32) / 255 for c, i in rgb.items()}
    cases = {
        "flipped view": {c: i[..., ::-1] for c, i in obs["images"].items()},  # OpenCV BGR -> RGB
        "big-endian float": {c: f.astype(">f4") for c, f in floats.items()},
    }
    expected = {"flipped view": rgb, "big-endian float": floats}
    for name, images in cases.items():
        policy.reset()
        actual = policy.predict_action({**obs, "images": images}, noise=noise)
        policy.reset()
        np.testing.assert_array_equal(actual, policy.predict_action({**obs, "images": expected[name]}, noise=noise))


# ------------------------------------------------------------------------------ instructions
def _instructions() -> dict[str, list[str]]:
    """The instructions of the built-in tasks and LeRobot's MetaWorld task descriptions."""
    metaworld = Path(lerobot.envs.__file__).parent / "metaworld_config.json"
    tabletop = [template.format(f"{colour} {shape}") for template in INSTRUCTION_TEMPLATES.values()
                for colour in COLOURS for shape in SHAPES]
    return {
        "builtin": tabletop + [text for _, text in ALOHA_TASKS.values()] + [PUSHT_INSTRUCTION],
        "metaworld": list(json.loads(metaworld.read_text())["TASK_DESCRIPTIONS"].values()),
    }


def test_the_default_length_holds_the_builtin_and_metaworld_instructions():
    step = GeoVLATokenizerStep(max_length=GeoVLAConfig.tokenizer_max_length)
    longest = {name: max(len(step.tokenizer(text)["input_ids"]) for text in texts)
               for name, texts in _instructions().items()}
    assert longest == {"builtin": 49, "metaworld": 58}  # PushT's; "Grasp the puck from one bin ..."
    assert max(longest.values()) <= GeoVLAConfig.tokenizer_max_length


def test_a_long_instruction_raises_by_default(dataset_meta):
    policy = make_policy(dataset_meta, tokenizer_max_length=32)
    with pytest.raises(ValueError, match=r"'move the gripper .* red cube' has 50 tokens.*only the first 32.*'warn'"):
        policy.predict_action(_observation(instruction=RED))
    assert not policy._history


def test_a_long_instruction_warns_when_asked_and_is_read_whole_at_the_default_length(dataset_meta):
    """Cut at 32 tokens, the red and the blue cube read alike; at the default length they differ."""
    cut = make_policy(dataset_meta, tokenizer_max_length=32, instruction_truncation="warn")
    noise = _noise(cut)
    with pytest.warns(UserWarning, match=r"red cube' has 50 tokens"):
        red = cut.predict_action(_observation(instruction=RED), noise=noise)
    cut.reset()
    with pytest.warns(UserWarning, match="blue cube' has 51 tokens"):
        np.testing.assert_array_equal(cut.predict_action(_observation(instruction=BLUE), noise=noise), red)
    whole = make_policy(dataset_meta)
    red = whole.predict_action(_observation(instruction=RED), noise=noise)
    whole.reset()
    assert not np.allclose(red, whole.predict_action(_observation(instruction=BLUE), noise=noise), atol=1e-4)


def test_instruction_truncation_is_validated():
    with pytest.raises(ValueError, match=r"instruction_truncation must be one of \('warn', 'error'\), got 'cut'"):
        GeoVLAConfig(instruction_truncation="cut")
