"""Streaming inference: streamed = block-causal batch forward, causality, bounded caches, bad input."""

import pytest
import torch

from geometry import GeometryModel, make_config
from geometry.aggregator import time_indices
from geometry.streaming import GeometryStream, camera_budget_for, stream_model

SIZE = 32
FRAME_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


def make_model(causal: bool = True, seed: int = 0, **overrides) -> GeometryModel:
    """Tiny float64 model whose zero/near-zero inits are perturbed so every path carries signal."""
    torch.manual_seed(seed)
    config = make_config("tiny", img_size=SIZE, track_head=False, causal_time=causal, **overrides)
    model = GeometryModel(config).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.fill_(0.5)
        model.aggregator.dynamics_mask.strength.fill_(2.0)
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


def clip(T: int, V: int | None, B: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, 3, SIZE, SIZE) if V is None else (B, T, V, 3, SIZE, SIZE)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def stacked(steps: list[dict], key: str) -> torch.Tensor:
    return torch.stack([s[key] for s in steps], dim=1)


def assert_frames_close(batch: dict, steps: list[dict], atol: float = 1e-10) -> None:
    for key in FRAME_KEYS:
        torch.testing.assert_close(stacked(steps, key), batch[key], atol=atol, rtol=0)
    torch.testing.assert_close(torch.cat([s["mask_logits"] for s in steps], 1), batch["mask_logits"], atol=atol, rtol=0)


@pytest.mark.parametrize("rotated", [True, False])
def test_unbounded_stream_equals_causal_batch_multiview(model, rotated):
    images = clip(T=4, V=2)
    with torch.no_grad():
        batch = model(images, static_cameras=False)
    stream = GeometryStream(model, rotated_keys=rotated)
    steps = [stream.step(images[:, t]) for t in range(4)]
    assert_frames_close(batch, steps)
    for it, poses in enumerate(batch["pose_enc_list"]):
        torch.testing.assert_close(torch.stack([s["pose_enc_list"][it] for s in steps], 1), poses, atol=1e-10, rtol=0)


def test_unbounded_stream_equals_causal_batch_legacy_with_cameras(model):
    images = clip(T=4, V=None, B=2)
    intrinsics = torch.eye(3, dtype=torch.float64).expand(2, 4, 1, 3, 3).clone()
    intrinsics[..., 0, 0] = intrinsics[..., 1, 1] = torch.linspace(20, 40, 4, dtype=torch.float64).view(1, 4, 1)
    with torch.no_grad():
        batch = model(images, intrinsics=intrinsics)
    stream = GeometryStream(model)
    steps = [stream.step(images[:, t], intrinsics=intrinsics[:, t, 0]) for t in range(4)]
    assert steps[0]["pose_enc"].shape == (2, 9) and steps[0]["depth"].shape == (2, SIZE, SIZE)
    assert_frames_close(batch, steps)


@pytest.mark.parametrize("legacy", [False, True])
def test_causal_batch_never_sees_later_time_steps(model, legacy):
    images = clip(T=4, V=None if legacy else 2)
    perturbed = images.clone()
    perturbed[:, 2:] = torch.rand_like(perturbed[:, 2:])
    non_causal = make_model(causal=False)
    with torch.no_grad():
        a, b = model(images, static_cameras=False), model(perturbed, static_cameras=False)
        c, d = non_causal(images, static_cameras=False), non_causal(perturbed, static_cameras=False)
    for key in FRAME_KEYS:
        torch.testing.assert_close(a[key][:, :2], b[key][:, :2], atol=1e-12, rtol=0)
        assert (a[key][:, 2:] - b[key][:, 2:]).abs().max() > 1e-6
    # the same check fails without causal_time: earlier steps do see later ones there
    assert (c["pose_enc"][:, :2] - d["pose_enc"][:, :2]).abs().max() > 1e-6
    assert (c["depth"][:, :2] - d["depth"][:, :2]).abs().max() > 1e-6


def test_bounded_stream_keeps_budget_and_anchors_and_matches_until_full(model):
    T = 6
    images = clip(T=T, V=2, seed=3)
    N = 5 + (SIZE // 8) ** 2
    total = 9 * 2 * N * 3  # 9 cached layers (6 global, 3 temporal frame), 2 views: 3 steps each
    bounded = GeometryStream(model, total_budget=total)
    bounded_raw = GeometryStream(model, total_budget=total, rotated_keys=False)
    exact = GeometryStream(model)
    diverged = False
    for t in range(T):
        out_b, out_r, out_e = (s.step(images[:, t]) for s in (bounded, bounded_raw, exact))
        agg, cam = bounded.groups
        assert agg.tokens <= total and cam.tokens <= cam.total
        for cache, ref in zip(agg.caches, exact.groups[0].caches):  # anchors (step 0) survive
            assert torch.equal(cache.buffers["k"][:, :, : cache.anchors], ref.buffers["k"][:, :, : ref.anchors])
        for key in FRAME_KEYS:  # raw-key caching evicts the same tokens
            torch.testing.assert_close(out_b[key], out_r[key], atol=1e-10, rtol=0)
        if t < 2:  # nothing evicted yet
            torch.testing.assert_close(out_b["depth"], out_e["depth"], atol=1e-12, rtol=0)
        diverged |= bool((out_b["depth"] - out_e["depth"]).abs().max() > 1e-9)
    assert diverged  # eviction did change what later steps attend to
    assert exact.cached_tokens > 2 * bounded.cached_tokens


def test_budget_too_small_for_anchors_is_rejected(model):
    stream = GeometryStream(model, total_budget=100)
    with pytest.raises(ValueError, match="anchor tokens"):
        stream.step(clip(T=1, V=2)[:, 0])
    with pytest.raises(ValueError, match="total_budget=-1"):
        GeometryStream(model, total_budget=-1)
    assert camera_budget_for(8400, 9, 8, 21, 2) == 356


def test_bad_input_mid_stream_raises_and_stream_stays_usable(model):
    images = clip(T=4, V=2, seed=5)
    reference = GeometryStream(model)
    expected = [reference.step(images[:, t]) for t in range(4)]
    stream = GeometryStream(model)
    stream.step(images[:, 0])
    stream.step(images[:, 1])
    bad = {
        "V=3 (stream has 2)": clip(T=1, V=3)[:, 0],
        "H=40 (stream has 32), W=40 (stream has 32)": torch.rand(1, 2, 3, 40, 40, dtype=torch.float64),
        "legacy=True (stream has False)": images[:, 2, 0],
        "B=2 (stream has 1)": clip(T=1, V=2, B=2)[:, 0],
        "NaN": torch.full_like(images[:, 2], float("nan")),
    }
    for message, frame in bad.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            stream.step(frame)
    with pytest.raises(ValueError, match="intrinsics must have shape"):
        stream.step(images[:, 2], intrinsics=torch.eye(3, dtype=torch.float64).expand(1, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\[B, V, 3, H, W\]"):
        stream.step(images[:, 2, 0, 0])
    assert stream.steps == 2
    for t in (2, 3):
        out = stream.step(images[:, t])
        for key in FRAME_KEYS:
            torch.testing.assert_close(out[key], expected[t][key], atol=1e-12, rtol=0)


def test_stream_longer_than_max_time_steps_clamps_the_time_index():
    assert time_indices(98, 3, 100).tolist() == [98, 99, 99]
    model = make_model(max_time_steps=3)
    frame = clip(T=1, V=2)
    tokens = {step: model.aggregator.embed(frame, first_step=step)[0] for step in (1, 2, 4, 50)}
    assert not torch.equal(tokens[1], tokens[2])
    assert torch.equal(tokens[2], tokens[4]) and torch.equal(tokens[2], tokens[50])
    stream = GeometryStream(model)
    images = clip(T=4, V=2)
    outs = [stream.step(images[:, t]) for t in range(4)]
    assert all(torch.isfinite(o["depth"]).all() for o in outs)
    with pytest.raises(ValueError, match="T=4 exceeds max_time_steps=3"):
        model(images)


def test_stream_model_calls_frame_writer_in_order(model):
    images = clip(T=3, V=2, seed=7)
    frames = [{"images": images[:, t]} for t in range(3)]
    written = []
    results = stream_model(model, frames, frame_writer=lambda i, frame, pred: written.append((i, frame, pred)))
    assert [w[0] for w in written] == [0, 1, 2]
    assert all(w[1] is f and w[2] is r for w, f, r in zip(written, frames, results))
    manual = GeometryStream(model)
    for t in range(3):
        torch.testing.assert_close(results[t]["depth"], manual.step(images[:, t])["depth"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="without 'images'"):
        stream_model(model, [{"img": images[:, 0]}])


def test_cached_aggregator_forward_takes_one_time_step(model):
    caches = model.aggregator.new_caches(2, legacy=False)
    with pytest.raises(ValueError, match="one time step, got T=2"):
        model.aggregator(clip(T=2, V=2), caches=caches)
