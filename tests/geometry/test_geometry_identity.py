"""New modules start as the identity; the dynamics-mask bias suppresses what it should."""

import torch
import torch.nn.functional as F

from geometry.aggregator import Aggregator
from geometry.config import make_config
from geometry.dynamics_mask import DynamicsMask, dynamics_key_bias, query_strengths
from geometry.view_mixer import ViewMixer


def _pair(**new):
    torch.manual_seed(0)
    base = Aggregator(make_config("tiny", view_mixer=False, dynamics_mask=False)).eval()
    torch.manual_seed(1)
    full = Aggregator(make_config("tiny", **new)).eval()
    missing, unexpected = full.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    return base, full


@torch.no_grad()
def test_view_mixer_identity_at_init_and_not_after():
    mixer = ViewMixer(64, num_heads=8, rank=16)
    x = torch.randn(2, 2, 3, 16, 64)
    assert torch.equal(mixer(x), x)
    torch.nn.init.normal_(mixer.out.up.weight)
    assert not torch.allclose(mixer(x), x)


@torch.no_grad()
def test_aggregator_with_view_mixer_equals_without_at_init():
    base, full = _pair(view_mixer=True, dynamics_mask=False)
    images = torch.rand(1, 2, 3, 3, 32, 32)
    a, b = base(images), full(images)
    for k in a.layers:
        assert torch.equal(a.layers[k], b.layers[k])


@torch.no_grad()
def test_camera_param_embedding_identity_at_init():
    torch.manual_seed(0)
    model = Aggregator(make_config("tiny", dynamics_mask=False)).eval()
    images = torch.rand(1, 2, 3, 3, 32, 32)
    K = torch.eye(3).expand(1, 2, 3, 3, 3) * 30
    E = torch.randn(1, 2, 3, 3, 4)
    plain, with_cams = model(images), model(images, intrinsics=K, extrinsics=E)
    for k in plain.layers:
        assert torch.equal(plain.layers[k], with_cams.layers[k])
    torch.nn.init.normal_(model.camera_param_embed[2].weight)
    assert not torch.allclose(model(images).layers[5], model(images, K, E).layers[5])


@torch.no_grad()
def test_dynamics_mask_identity_at_init():
    base, full = _pair(view_mixer=False, dynamics_mask=True)
    images = torch.rand(1, 2, 3, 3, 32, 32)
    out = full(images)
    assert out.mask_logits.shape == (1, 6 * 16)
    mask_prob = torch.sigmoid(out.mask_logits)
    assert torch.equal(full.dynamics_mask.bias(mask_prob, 3, 6, 21, 5), torch.zeros(1, 1, 126, 126))
    ref = base(images)
    for k in ref.layers:
        torch.testing.assert_close(out.layers[k], ref.layers[k], rtol=0, atol=1e-6)
    full.dynamics_mask.strength.fill_(1.0)
    opened = full(images)
    # the mask acts in global attention after stage 1 (layers 2-5 of tiny), never before
    torch.testing.assert_close(opened.layers[1], ref.layers[1], rtol=0, atol=1e-6)
    assert not torch.allclose(opened.layers[2], ref.layers[2], atol=1e-4)


def test_query_strengths_example():
    s = query_strengths(7, 5, torch.tensor(0.3))
    torch.testing.assert_close(s, torch.tensor([0.3, 1, 1, 1, 1, 0, 0]))


def test_key_bias_examples():
    strengths = query_strengths(7, 5, torch.tensor(0.5))
    mask = torch.tensor([[0.5, 0.0, 1.0, 0.0]])  # 2 frames x 2 patches
    bias = dynamics_key_bias(mask, strengths, num_frames=2, patch_start_idx=5)[0, 0]
    assert bias.shape == (14, 14)
    torch.testing.assert_close(bias[0, 5], torch.log(torch.tensor(0.75)))  # camera query, m=0.5, gamma=0.5
    torch.testing.assert_close(bias[1, 12], torch.log(torch.tensor(1e-6)))  # register query, m=1
    assert torch.equal(bias[5:7], torch.zeros(2, 14))  # patch queries
    assert torch.equal(bias[:, [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]], torch.zeros(14, 10))  # special keys


def test_mask_one_removes_key_for_camera_queries_only():
    torch.manual_seed(0)
    dm = DynamicsMask(16, depth=4)
    with torch.no_grad():
        dm.gates.fill_(20.0)  # gamma ~ 1
        dm.strength.fill_(1.0)
    S, P, ps = 2, 4, 5
    N = ps + P
    mask = torch.zeros(1, S * P)
    mask[0, 6] = 1.0  # frame 1, patch 2 -> token index 1*N + 5 + 2
    key = N + ps + 2
    bias = dm.bias(mask, layer=2, num_frames=S, tokens_per_frame=N, patch_start_idx=ps)
    q, k = torch.randn(1, 1, S * N, 8), torch.randn(1, 1, S * N, 8)
    plain = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    biased = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5 + bias, dim=-1)
    camera_rows = [0, N]
    patch_rows = [i for i in range(S * N) if i % N >= ps]
    assert biased[0, 0, camera_rows, key].max() < 1e-5
    assert plain[0, 0, camera_rows, key].min() > 1e-3
    torch.testing.assert_close(biased[0, 0, patch_rows], plain[0, 0, patch_rows])
    # Same through SDPA: patch-query outputs unchanged, camera queries as if the key were absent.
    v = torch.randn(1, 1, S * N, 8)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    ref = F.scaled_dot_product_attention(q, k, v)
    keep = torch.ones(S * N, dtype=torch.bool)
    keep[key] = False
    without = F.scaled_dot_product_attention(q, k[:, :, keep], v[:, :, keep])
    torch.testing.assert_close(out[0, 0, patch_rows], ref[0, 0, patch_rows])
    torch.testing.assert_close(out[0, 0, camera_rows], without[0, 0, camera_rows], atol=1e-4, rtol=0)
