"""``GeoVLAModel.compile_sampling`` keeps the policy network's actions, captures the whole sampling
as one graph, and still rejects bad input values (graph capture checked with the ``aot_eager`` and
``eager`` backends, which trace like inductor without its slow C++ build)."""

import pytest
import torch
import torch._dynamo
from lerobot.configs.types import FeatureType, PolicyFeature

from policies.configuration_geovla import GeoVLAConfig
from policies.geovla_model import GeoVLAModel, inductor_options


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


def test_compiled_sampling_is_one_graph_with_two_variants():
    """Each graph break would leave eager ops and a guard check between graphs on every call; a
    cache filled inside the graph would make later calls compile new graphs. A sliding history
    needs two variants: with and without reusing the shared frames' patch features."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = _model()
    model.compile_sampling(backend="eager")
    _, camera_mask, ids, mask, state = _inputs()
    frames = [torch.rand(1, 1, 2, 3, 32, 32) for _ in range(4)]
    model.sample_actions(torch.cat(frames[:2], dim=1), camera_mask, ids, mask, state)
    counters = torch._dynamo.utils.counters
    assert not dict(counters["graph_break"]), dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    for history in (frames[1:3], frames[2:4], [frames[0], frames[3]], frames[:2]):  # slides, a jump
        model.sample_actions(torch.cat(history, dim=1), camera_mask, ids, mask, state)
    assert counters["stats"]["unique_graphs"] == 2


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
               "empty_instruction": "instruction_mask has no valid instruction token", "nan_state": "state contains NaN"}[bad]
    with pytest.raises(ValueError, match=message):
        model.sample_actions(images, camera_mask, ids, mask, state)


def test_cpp_wrapper_needs_inductor():
    with pytest.raises(ValueError, match="cpp_wrapper needs the inductor backend"):
        _model().compile_sampling(backend="aot_eager", cpp_wrapper=True)


def test_cpu_kernels_run_on_the_thread_count_they_are_compiled_for(tmp_path):
    """Inductor's cache does not tell thread counts apart; ``inductor_options`` does. A function
    compiled under 1 thread, then again under 2 with the same on-disk cache, gets 2-thread
    kernels (without the option the second compile finds the first in the cache)."""
    from torch._inductor.utils import fresh_inductor_cache, run_and_get_code

    def pointwise(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * 2 + 1

    x = torch.randn(256, 1024)
    pragmas = {}
    previous = torch.get_num_threads()
    try:
        with fresh_inductor_cache(dir=str(tmp_path)):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                torch._dynamo.reset()  # a new compile, as in a new process; the on-disk cache stays
                compiled = torch.compile(pointwise, options=inductor_options(x.device, cpp_wrapper=False))
                _, (code, *_) = run_and_get_code(compiled, x)
                pragmas[threads] = "#pragma omp parallel num_threads(2)" in code
    finally:
        torch.set_num_threads(previous)
    assert pragmas == {1: False, 2: True}


def test_compiled_sampling_reuses_the_frames_a_sliding_history_shares():
    """The aggregator embeds only the newest time step when the history slid by one, compiled too
    (the reuse is decided eagerly before the graph), with the eager model's actions."""
    model = _model()
    embedded: list[int] = []  # frames per patch-embed call
    model.geometry.aggregator.patch_embed.register_forward_pre_hook(lambda m, args: embedded.append(args[0].shape[0]))
    torch.manual_seed(2)
    frames = [torch.rand(1, 1, 2, 3, 32, 32) for _ in range(3)]
    _, camera_mask, ids, mask, state = _inputs()
    noise = torch.randn(1, model.config.chunk_size, model.config.max_action_dim)

    def slide() -> list[torch.Tensor]:
        model.geometry.aggregator._history.clear()
        embedded.clear()
        return [model.sample_actions(torch.cat(frames[i:i + 2], dim=1), camera_mask, ids, mask, state, noise=noise)
                for i in range(2)]

    eager = slide()
    assert embedded == [4, 2]  # 2 views x 2 steps, then the newest step only
    model.compile_sampling(backend="eager")
    compiled = slide()
    assert embedded == [4, 2]
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compiled_sampling_follows_an_in_place_update_of_the_fused_expert_weights():
    """The graph reads the fused q/k/v and gate/up copies of the expert (CPU, no grad) as they
    were refreshed eagerly before the call, so an optimiser-style in-place update reaches it."""
    model = _model()
    inputs = _inputs()
    noise = torch.randn(1, model.config.chunk_size, model.config.max_action_dim)
    before = model.sample_actions(*inputs, noise=noise)  # eager: builds the fused copies
    model.compile_sampling(backend="eager")
    torch.testing.assert_close(model.sample_actions(*inputs, noise=noise), before, atol=1e-5, rtol=1e-5)
    expert = model.action_model.fusion.expert.layers[0]
    with torch.no_grad():
        expert.self_attn.v_proj.weight.mul_(3.0)
        expert.mlp.up_proj.weight.add_(0.05)
    after = model.sample_actions(*inputs, noise=noise)
    model._compiled_sample = None
    eager = model.sample_actions(*inputs, noise=noise)
    torch.testing.assert_close(after, eager, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after, before, atol=1e-3)


def test_under_cuda_graphs_nothing_kept_from_a_call_lives_in_its_output_memory():
    """A CUDA graph's replay overwrites the previous replay's outputs. Emulated here on the CPU:
    each call zeroes the tensors the last call's graph produced (its chunk and the history it
    stored). The copies taken after each call keep the sliding history's actions equal to the
    eager ones and the chunk a caller holds intact."""
    model = _model()
    _, camera_mask, ids, mask, state = _inputs()
    noise = torch.randn(1, model.config.chunk_size, model.config.max_action_dim)
    frames = [torch.rand(1, 1, 2, 3, 32, 32) for _ in range(3)]
    histories = [torch.cat(frames[i:i + 2], dim=1) for i in range(2)]
    eager = [model.sample_actions(h, camera_mask, ids, mask, state, noise=noise) for h in histories]
    model.geometry.aggregator._history.clear()
    model.compile_sampling(backend="eager")
    model._graph_outputs_recycled = True  # as inductor with CUDA graphs on a GPU
    graph, last_outputs = model._compiled_sample, []

    def replay(*args):
        for tensor in last_outputs:
            tensor.zero_()
        actions = graph(*args)
        history = model.geometry.aggregator._history
        last_outputs[:] = [actions, history._features, history._images]
        return actions

    model._compiled_sample = replay
    compiled = [model.sample_actions(h, camera_mask, ids, mask, state, noise=noise) for h in histories]
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
