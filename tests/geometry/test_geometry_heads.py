"""Heads and pose encoding: round trip, camera head reacts to views, DPT resolution/activations."""

import math

import torch

from geometry.config import make_config
from geometry.heads.activations import activate, activate_head
from geometry.model import GeometryModel
from geometry.pose import extri_intri_to_pose_encoding, matrix_to_quaternion, pose_encoding_to_extri_intri, quaternion_to_matrix


def _random_rotations(n):
    q = torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    return quaternion_to_matrix(q)


def test_quaternion_round_trip_including_near_180_degrees():
    torch.manual_seed(0)
    R = _random_rotations(64)
    flips = torch.diag(torch.tensor([1.0, -1.0, -1.0])).expand(2, 3, 3)  # 180 deg about x
    R = torch.cat([R, flips, torch.eye(3)[None]])
    q = matrix_to_quaternion(R)
    torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-5, rtol=0)
    assert (q[:, 3] >= 0).all()
    torch.testing.assert_close(q[-1], torch.tensor([0.0, 0, 0, 1]))


def test_pose_encoding_round_trip():
    torch.manual_seed(0)
    H, W = 48, 64
    R = _random_rotations(10)
    t = torch.randn(10, 3)
    E = torch.cat([R, t[..., None]], dim=-1)
    K = torch.zeros(10, 3, 3)
    K[:, 0, 0] = torch.rand(10) * 50 + 30
    K[:, 1, 1] = torch.rand(10) * 50 + 30
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1
    enc = extri_intri_to_pose_encoding(E, K, (H, W))
    assert enc.shape == (10, 9)
    torch.testing.assert_close(enc[:, 7], 2 * torch.atan(H / 2 / K[:, 1, 1]))
    E2, K2 = pose_encoding_to_extri_intri(enc, (H, W))
    torch.testing.assert_close(E2, E, atol=1e-5, rtol=0)
    torch.testing.assert_close(K2, K, atol=1e-4, rtol=0)
    # a 90 degree field of view means focal = half the image side
    _, K3 = pose_encoding_to_extri_intri(torch.tensor([0, 0, 0, 0, 0, 0, 1, math.pi / 2, math.pi / 2]), (H, W))
    torch.testing.assert_close(K3[0, 0], torch.tensor(W / 2.0))


def test_activations():
    x = torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(activate(x, "inv_log"), torch.tensor([-(math.e ** 2 - 1), 0.0, math.e ** 3 - 1]))
    assert (activate(x, "expp1") > 1).all() and (activate(x, "exp") > 0).all()
    values, conf = activate_head(torch.randn(2, 4, 5, 6), "inv_log", "expp1")
    assert values.shape == (2, 5, 6, 3) and conf.shape == (2, 5, 6)


@torch.no_grad()
def test_model_outputs_and_camera_head_reacts_to_views():
    torch.manual_seed(0)
    model = GeometryModel(make_config("tiny", frames_chunk_size=4)).eval()
    images = torch.rand(1, 2, 3, 3, 64, 48)
    out = model(images)
    assert out["pose_enc"].shape == (1, 3, 9) and len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, 2, 3, 64, 48)  # DPT output at the input resolution
    assert out["world_points"].shape == (1, 2, 3, 64, 48, 3)
    assert (out["depth"] > 0).all() and (out["depth_conf"] > 1).all() and (out["world_points_conf"] > 1).all()
    # different views get different poses; changing view 2's image changes view 2's pose
    assert not torch.allclose(out["pose_enc"][0, 0], out["pose_enc"][0, 1])
    perturbed = images.clone()
    perturbed[0, :, 2] = torch.rand(2, 3, 64, 48)
    out2 = model(perturbed)
    assert (out2["pose_enc"][0, 2] - out["pose_enc"][0, 2]).abs().max() > 1e-5
    # dynamic cameras (wrist cameras move): one pose per frame
    dyn = model(images, static_cameras=False)["pose_enc"]
    assert dyn.shape == (1, 2, 3, 9)
    # frame chunking does not change the dense outputs
    model.depth_head.chunk_size = 1
    torch.testing.assert_close(model(images)["depth"], out["depth"])


@torch.no_grad()
def test_legacy_shapes():
    model = GeometryModel(make_config("tiny")).eval()
    out = model(torch.rand(2, 3, 3, 64, 64))
    assert out["pose_enc"].shape == (2, 3, 9)
    assert out["depth"].shape == (2, 3, 64, 64) and out["world_points"].shape == (2, 3, 64, 64, 3)


def test_uv_position_embedding():
    from geometry.heads.dpt import uv_position_embedding

    one = uv_position_embedding(8, 1, 1, aspect_ratio=1.0)
    assert one[:, 0, 0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    emb = uv_position_embedding(8, 3, 4, aspect_ratio=4 / 3)
    assert emb.shape == (8, 3, 4)
    # x-half varies along columns only, y-half along rows only; the box has unit half-diagonal
    assert torch.equal(emb[:4, 0], emb[:4, 2]) and torch.equal(emb[4:, :, 0], emb[4:, :, 3])
    x_left = torch.asin(emb[0, 0, 0])  # first frequency is 1
    torch.testing.assert_close(x_left, torch.tensor(-(4 / 3) / (5 / 3) * 3 / 4))
