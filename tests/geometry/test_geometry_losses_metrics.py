"""Losses vanish at the ground truth and grow away from it; metrics match worked examples."""

import math

import torch

from geometry.losses import (camera_loss, confidence_loss, geometry_loss, gradient_loss, mask_loss, project_points,
                             reprojection_consistency_loss, smoothness_loss, track_loss, unproject_depth)
from geometry.metrics import chamfer_metrics, median_scaled_depth_metrics, pose_auc, relative_pose_errors
from geometry.pose import quaternion_to_matrix


def _scene_cameras(V=3):
    """V cameras on a circle looking at the origin (OpenCV camera-from-world), and intrinsics."""
    E, K = [], []
    for v in range(V):
        a = 2 * math.pi * v / (V * 12)
        center = torch.tensor([math.sin(a) * 3, 0.0, -math.cos(a) * 3])
        z = -center / center.norm()
        x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), z)
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        R = torch.stack([x, y, z])
        E.append(torch.cat([R, (-R @ center)[:, None]], dim=1))
        K.append(torch.tensor([[20.0, 0, 16], [0, 20, 16], [0, 0, 1]]))
    return torch.stack(E), torch.stack(K)


def _plane_depth(E, K, H=32, W=32):
    """Exact depth of the plane z_world = 1 seen by each camera."""
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    depths = []
    for Ei, Ki in zip(E, K):
        R, t = Ei[:, :3], Ei[:, 3]
        center = -R.T @ t
        rays = (R.T @ (torch.linalg.inv(Ki) @ pix.T)).T  # world direction per unit camera depth
        depths.append(((1.0 - center[2]) / rays[:, 2]).reshape(H, W))
    return torch.stack(depths)


def test_camera_loss_zero_at_gt_sign_invariant_and_weighted():
    gt = torch.randn(2, 3, 9)
    assert camera_loss([gt, gt], gt) == 0
    flipped = gt.clone()
    flipped[..., 3:7] *= -1
    assert camera_loss([flipped], gt) == 0
    off = gt + 0.1
    assert camera_loss([off, gt], gt) < camera_loss([gt, off], gt)  # the last iteration weighs most


def test_confidence_and_gradient_losses():
    gt = torch.rand(2, 8, 8) + 1
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    conf = torch.full_like(gt, 2.0)
    assert torch.isclose(confidence_loss(gt, gt, conf, valid), -0.2 * torch.log(torch.tensor(2.0)))
    assert confidence_loss(gt + 0.5, gt, conf, valid) > confidence_loss(gt, gt, conf, valid)
    assert gradient_loss(gt + 3.0, gt, valid) < 1e-5  # a constant offset has no gradient error
    assert gradient_loss(gt * 2, gt, valid) > 0.1
    pts = torch.randn(2, 8, 8, 3)
    assert confidence_loss(pts + torch.tensor([0.0, 0.0, 1.0]), pts, conf, valid) > 1.8  # 2 * 1 - 0.2 * log 2


def test_unproject_project_round_trip():
    E, K = _scene_cameras(2)
    depth = torch.rand(2, 4, 5) + 1
    world = unproject_depth(depth, K, E)
    uv, z = project_points(world.reshape(2, -1, 3), K, E)
    torch.testing.assert_close(z, depth.reshape(2, -1))
    v, u = torch.meshgrid(torch.arange(4) + 0.5, torch.arange(5) + 0.5, indexing="ij")
    torch.testing.assert_close(uv[0], torch.stack([u, v], -1).reshape(-1, 2), atol=1e-4, rtol=0)


def test_reprojection_consistency_zero_for_true_depth_positive_when_wrong():
    E, K = _scene_cameras(3)
    depth = _plane_depth(E, K)
    d = depth.reshape(1, 1, 3, 32, 32)
    Eb, Kb = E.reshape(1, 1, 3, 3, 4), K.reshape(1, 1, 3, 3, 3)
    assert (depth > 0).all()
    # bilinear sampling of a plane's depth is not exact (its inverse is linear), hence 1e-2
    assert reprojection_consistency_loss(d, Kb, Eb) < 1e-2
    wrong = d.clone()
    wrong[:, :, 1] *= 1.2
    assert reprojection_consistency_loss(wrong, Kb, Eb) > 0.05


def test_smoothness_and_mask_losses():
    images = torch.rand(1, 3, 16, 16)
    flat = torch.ones(1, 16, 16)
    noisy = flat + torch.rand(1, 16, 16)
    assert smoothness_loss(flat, images) == 0 < smoothness_loss(noisy, images)
    mask = torch.zeros(1, 2, 16, 16)
    mask[:, 1, :8, :8] = 1  # the first patch of frame 1 (patch 8) is dynamic
    logits_good = torch.full((1, 8), -8.0)
    logits_good[0, 4] = 8.0
    assert mask_loss(logits_good, mask, 8) < 0.01 < mask_loss(-logits_good, mask, 8)


def test_geometry_loss_combines_terms():
    E, K = _scene_cameras(3)
    depth = _plane_depth(E, K).reshape(1, 1, 3, 32, 32)
    outputs = {"depth": depth, "depth_conf": torch.ones_like(depth) * 1.5,
               "pose_enc_list": [torch.zeros(1, 3, 9)], "mask_logits": None}
    gt = {"depth": depth, "pose_enc": torch.zeros(1, 3, 9), "intrinsics": K.reshape(1, 1, 3, 3, 3),
          "extrinsics": E.reshape(1, 1, 3, 3, 4)}
    terms = geometry_loss(outputs, gt)
    assert set(terms) == {"camera", "depth", "gradient", "reproj", "total"}
    assert terms["camera"] == 0 and terms["gradient"] == 0 and terms["reproj"] < 1e-2


def test_pose_auc_examples():
    zeros = torch.zeros(10)
    assert pose_auc(zeros, zeros) == 1.0
    assert pose_auc(torch.full((10,), 45.0), zeros) == 0.0
    assert abs(pose_auc(torch.full((4,), 15.5), torch.full((4,), 3.0)) - 0.5) < 1e-6


def test_relative_pose_errors():
    torch.manual_seed(0)
    R = quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(4, 4), dim=-1))
    E = torch.cat([R, torch.randn(4, 3, 1)], dim=-1)
    r, t = relative_pose_errors(E, E)
    assert r.shape == (6,) and r.max() < 0.1 and t.max() < 0.1
    # a global similarity (shared rotation, scale) leaves relative errors at zero
    G = torch.eye(4)
    G[:3, :3] = quaternion_to_matrix(torch.tensor([0.0, 0.3, 0.0, 1.0]))
    E2 = torch.cat([E[:, :, :3], E[:, :, 3:] * 2], -1)
    E2 = torch.cat([E2, torch.tensor([[[0.0, 0, 0, 1]]]).expand(4, 1, 4)], 1) @ G
    r, t = relative_pose_errors(E2[:, :3], E)
    assert r.max() < 0.1 and t.max() < 0.1
    noisy = E.clone()
    noisy[1, :, :3] = quaternion_to_matrix(torch.tensor([0.0, 0.0, 0.5, 1.0])) @ E[1, :, :3]
    assert relative_pose_errors(noisy, E)[0].max() > 20


def test_depth_metrics_median_scaling():
    gt = torch.rand(2, 8, 8) + 1
    m = median_scaled_depth_metrics(gt * 3.0, gt)  # scale is removed
    assert m["abs_rel"] < 1e-6 and m["delta_1.25"] == 1.0
    noisy = median_scaled_depth_metrics(gt * (1 + 0.5 * torch.rand(2, 8, 8)), gt)
    assert noisy["abs_rel"] > 0.05


def test_chamfer():
    pts = torch.rand(100, 3)
    assert chamfer_metrics(pts, pts)["chamfer"] < 1e-4
    m = chamfer_metrics(pts[:50], pts)  # half the points: accurate but incomplete
    assert m["accuracy"] < 1e-4 and m["completeness"] > 1e-2


def test_track_loss():
    gt = torch.rand(1, 3, 5, 2) * 30
    visible = torch.ones(1, 3, 5, dtype=torch.bool)
    assert track_loss([gt, gt], gt, visible) == 0
    off = gt + torch.tensor([1.0, 0.0])
    torch.testing.assert_close(track_loss([off], gt, visible), torch.tensor(1.0))
    assert track_loss([off, gt], gt, visible) < track_loss([gt, off], gt, visible)  # last iteration weighs most
    visible[:, 1:, 0] = False
    far = gt.clone()
    far[:, 1:, 0] += 100  # errors on invisible points do not count
    assert track_loss([far], gt, visible) == 0
    vis = torch.full((1, 3, 5), 0.5)
    torch.testing.assert_close(track_loss([gt], gt, visible, vis), torch.log(torch.tensor(2.0)))


def test_geometry_loss_runs_in_float32_on_bfloat16_outputs_under_autocast():
    E, K = _scene_cameras(3)
    depth = _plane_depth(E, K).reshape(1, 1, 3, 32, 32)
    noisy = depth * (1 + 0.1 * torch.rand(depth.shape, generator=torch.Generator().manual_seed(0)))
    outputs = {"depth": noisy.bfloat16(), "depth_conf": (torch.ones_like(depth) * 1.5).bfloat16(),
               "pose_enc_list": [torch.full((1, 3, 9), 0.1).bfloat16()], "mask_logits": None}
    gt = {"depth": depth, "pose_enc": torch.zeros(1, 3, 9), "intrinsics": K.reshape(1, 1, 3, 3, 3),
          "extrinsics": E.reshape(1, 1, 3, 3, 4)}
    reference = geometry_loss({k: v.float() if isinstance(v, torch.Tensor) else v for k, v in outputs.items()}
                              | {"pose_enc_list": [outputs["pose_enc_list"][0].float()]}, gt, log_depth=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = geometry_loss(outputs, gt, log_depth=True)
    assert set(terms) == set(reference)
    for name, value in terms.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0)
