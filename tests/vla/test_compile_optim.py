"""``vla.compile.compile_hot_paths`` keeps the policy network's actions (graph capture checked
with the ``aot_eager`` backend, which traces like inductor without its slow C++ build)."""

import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from policies.configuration_geovla import GeoVLAConfig
from policies.geovla_model import GeoVLAModel
from vla.compile import compile_hot_paths


def _model() -> GeoVLAModel:
    features = {f"observation.images.{cam}": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)) for cam in ("a", "b")}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (4,))
    config = GeoVLAConfig(image_size=32, device="cpu", push_to_hub=False, input_features=features,
                          output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    torch.manual_seed(0)
    return GeoVLAModel(config).eval()


def test_compiled_hot_paths_give_the_same_actions():
    model = _model()
    torch.manual_seed(1)
    inputs = (torch.rand(1, 2, 2, 3, 32, 32), torch.ones(1, 2, dtype=torch.bool),
              torch.randint(3, 200, (1, 12)), torch.ones(1, 12, dtype=torch.bool), torch.randn(1, 4))
    noise = torch.randn(1, model.config.chunk_size, model.config.max_action_dim)
    eager = model.sample_actions(*inputs, noise=noise)
    compile_hot_paths(model, backend="aot_eager")
    compiled = model.sample_actions(*inputs, noise=noise)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    assert hasattr(model.geometry.aggregator, "_compiled_call_impl")
    assert model.geometry.aggregator._compiled_call_impl is not None
    # names are unchanged: a compiled model loads an eager one's weights
    assert set(model.state_dict()) == set(_model().state_dict())
