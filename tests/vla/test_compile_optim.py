"""``GeoVLAModel.compile_sampling`` keeps the policy network's actions, captures the whole sampling
as one graph, and still rejects bad input values (graph capture checked with the ``aot_eager`` and
``eager`` backends, which trace like inductor without its slow C++ build)."""

import pytest
import torch
import torch._dynamo
from lerobot.configs.types import FeatureType, PolicyFeature

from policies.configuration_geovla import GeoVLAConfig
from policies.geovla_model import GeoVLAModel


def _model() -> GeoVLAModel:
    features = {f"observation.images.{cam}": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)) for cam in ("a", "b")}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (4,))
    config = GeoVLAConfig(image_size=32, device="cpu", push_to_hub=False, input_features=features,
                          output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    torch.manual_seed(0)
    return GeoVLAModel(config).eval()


def _inputs() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    return (torch.rand(1, 2, 2, 3, 32, 32), torch.ones(1, 2, dtype=torch.bool),
            torch.randint(3, 200, (1, 12)), torch.ones(1, 12, dtype=torch.bool), torch.randn(1, 4))


def test_compiled_sampling_gives_the_same_actions():
    model = _model()
    inputs = _inputs()
    noise = torch.randn(1, model.config.chunk_size, model.config.max_action_dim)
    eager = model.sample_actions(*inputs, noise=noise)
    model.compile_sampling(backend="aot_eager")
    compiled = model.sample_actions(*inputs, noise=noise)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    # names are unchanged: a compiled model loads an eager one's weights
    assert set(model.state_dict()) == set(_model().state_dict())


def test_compiled_sampling_is_one_graph():
    """Each graph break would leave eager ops and a guard check between graphs on every call."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = _model()
    model.compile_sampling(backend="eager")
    model.sample_actions(*_inputs())
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    assert not breaks, breaks
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("bad", ["nan_image", "id_out_of_vocab", "empty_instruction", "nan_state"])
def test_compiled_sampling_still_rejects_bad_values(bad):
    model = _model()
    model.compile_sampling(backend="eager")
    images, camera_mask, ids, mask, state = _inputs()
    if bad == "nan_image":
        images[0, 1, 0, 0, 3, 3] = float("nan")
    elif bad == "id_out_of_vocab":
        ids[0, 2] = 10**7
    elif bad == "empty_instruction":
        mask[:] = False
    else:
        state[0, 1] = float("inf")
    message = {"nan_image": "images contains NaN", "id_out_of_vocab": "instruction_ids must lie in",
               "empty_instruction": "no valid token in batch rows", "nan_state": "state contains NaN"}[bad]
    with pytest.raises(ValueError, match=message):
        model.sample_actions(images, camera_mask, ids, mask, state)


def test_cpp_wrapper_needs_inductor_without_a_mode():
    with pytest.raises(ValueError, match="cpp_wrapper needs the inductor backend"):
        _model().compile_sampling(backend="aot_eager", cpp_wrapper=True)
