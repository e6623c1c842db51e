"""VGGT's camera head: a model converted from VGGT-named random weights gives, on legacy input
`[B, S, 3, H, W]`, VGGT's pose encoding at every refinement iteration, and VGGT's gradients.

The reference below re-states VGGT's CameraHead from the raw weights, step by step:
- it reads the camera token (token 0) of the *last* aggregator layer, frame and global halves
  concatenated (2C channels), and normalises it with `token_norm` (eps 1e-5);
- each iteration embeds a pose with `embed_pose`: the learned `empty_pose_tokens` at the first
  iteration, the previous (detached) prediction after it;
- SiLU, then `poseLN_modulation` gives shift, scale and gate (in that order along the channels);
  the trunk input is `gate * (adaln_norm(t) * (1 + scale) + shift) + t`, `adaln_norm` a LayerNorm
  without affine parameters at eps 1e-6 and `t` the normalised camera tokens (the same `t` every
  iteration: the trunk's output is not carried over);
- the trunk: pre-norm blocks (no qk-norm, no RoPE, LayerScale) attending across the S frames;
- `pose_branch(trunk_norm(x))` is a delta added to the *detached* previous prediction (VGGT
  re-binds the prediction to its detached copy before the sum, so an iteration's output does not
  back-propagate into the earlier iterations' deltas);
- the activation: translation and quaternion linear, the two FoVs through ReLU.
"""

import pytest
import torch
import torch.nn.functional as F

from geometry.model import GeometryModel
from geometry.pretrained import load_vggt_weights
from test_geometry_vggt import DEPTH, HEADS, PATCH, _config, vggt_like_state_dict

# float64, absolute and relative. Measured largest difference per iteration (|pose| up to ~10):
# 2.3e-15, 4.0e-15, 5.9e-15, 8.7e-15.
TOLERANCE = 1e-12
GRAD_TOLERANCE = 1e-10  # float64, relative to each gradient's largest entry; measured: 2.2e-15
ITERATIONS = 4  # VGGT's default num_iterations, the config's camera_iterations
CAMERA = "camera_head."


def randomise_camera_head(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The camera head's VGGT weights re-drawn at scales where every part matters: norm scales
    1 +- 0.3, matrices ~ 1/sqrt(fan_in), LayerScale gammas, biases and the empty pose ~ 0.5."""
    g = torch.Generator().manual_seed(seed)
    out = dict(sd)
    for k, v in sd.items():
        if not k.startswith(CAMERA):
            continue
        noise = torch.randn(v.shape, generator=g, dtype=torch.float64)
        if "norm" in k and k.endswith("weight"):
            out[k] = 1 + 0.3 * noise
        elif v.dim() == 2:
            out[k] = noise / v.shape[1] ** 0.5
        else:
            out[k] = 0.5 * noise
    return out


# ---- VGGT's camera head, re-stated on VGGT-named weights ---------------------------------------

def ref_layer_norm(x, sd=None, name=None, eps=1e-5):
    w = None if name is None else sd[name + ".weight"]
    b = None if name is None else sd[name + ".bias"]
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def ref_linear(x, sd, name):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def ref_mlp(x, sd, name):
    return ref_linear(F.gelu(ref_linear(x, sd, name + ".fc1")), sd, name + ".fc2")


def ref_trunk_block(x, sd, p, heads):
    """Pre-norm block: x + ls1 * attn(norm1(x)); x + ls2 * mlp(norm2(x)); plain softmax attention."""
    B, N, D = x.shape
    hd = D // heads
    h = ref_layer_norm(x, sd, p + "norm1")
    q, k, v = ref_linear(h, sd, p + "attn.qkv").reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
    attn = torch.softmax((q * hd ** -0.5) @ k.transpose(-2, -1), dim=-1)
    a = (attn @ v).transpose(1, 2).reshape(B, N, D)
    x = x + sd[p + "ls1.gamma"] * ref_linear(a, sd, p + "attn.proj")
    return x + sd[p + "ls2.gamma"] * ref_mlp(ref_layer_norm(x, sd, p + "norm2"), sd, p + "mlp")


def ref_activate_pose(pose):
    """translation (3) linear, quaternion (4) linear, FoVs (2) ReLU."""
    return torch.cat([pose[..., :3], pose[..., 3:7], F.relu(pose[..., 7:])], dim=-1)


def ref_camera_head(sd, last_layer_tokens, heads=HEADS, iterations=ITERATIONS, feed_previous=True,
                    detach_sum=True):
    """VGGT's CameraHead on the last layer's tokens `[B, S, N, 2C]` -> one activated `[B, S, 9]`
    per iteration. `feed_previous=False` modulates every iteration with the empty pose (a wrong
    variant); `detach_sum=False` adds the delta to the attached previous prediction (wrong too)."""
    p = CAMERA
    depth = len({k.split(".")[2] for k in sd if k.startswith(p + "trunk.")})
    t = ref_layer_norm(last_layer_tokens[:, :, 0], sd, p + "token_norm")
    B, S, _ = t.shape
    pred = None
    outs = []
    for _ in range(iterations):
        if pred is None or not feed_previous:
            emb = ref_linear(sd[p + "empty_pose_tokens"].expand(B, S, -1), sd, p + "embed_pose")
        else:
            emb = ref_linear(pred.detach(), sd, p + "embed_pose")
        shift, scale, gate = ref_linear(F.silu(emb), sd, p + "poseLN_modulation.1").chunk(3, dim=-1)
        x = gate * (ref_layer_norm(t, eps=1e-6) * (1 + scale) + shift) + t
        for i in range(depth):
            x = ref_trunk_block(x, sd, f"{p}trunk.{i}.", heads)
        delta = ref_mlp(ref_layer_norm(x, sd, p + "trunk_norm"), sd, p + "pose_branch")
        if pred is None:
            pred = delta
        else:
            pred = (pred.detach() if detach_sum else pred) + delta
        outs.append(ref_activate_pose(pred))
    return outs


# ---- the converted model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted():
    """Float64 model converted from random VGGT-named weights (every tensor random, the camera
    head's at larger scales), its aggregator output (all layers) and forward output on legacy
    input: B=2, S=3 frames of 4 x 6 patches (non-square)."""
    torch.manual_seed(0)
    sd = randomise_camera_head({k: v.double() for k, v in vggt_like_state_dict(seed=5).items()}, seed=14)
    model = GeometryModel(_config()).double().eval()
    assert model.config.camera_iterations == ITERATIONS
    load_vggt_weights(model, sd)
    images = torch.rand(2, 3, 3, 4 * PATCH, 6 * PATCH, dtype=torch.float64)
    with torch.no_grad():
        agg = model.aggregator(images, output_layers=tuple(range(DEPTH)))
        out = model(images)
    return model, sd, agg, out


def test_pose_encodings_equal_vggt_restatement(converted):
    model, sd, agg, out = converted
    ref = ref_camera_head(sd, agg.layers[DEPTH - 1])
    assert len(out["pose_enc_list"]) == len(ref) == ITERATIONS
    for it, (got, want) in enumerate(zip(out["pose_enc_list"], ref)):
        assert got.shape == want.shape == (2, 3, 9)
        torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE, msg=f"iteration {it}")
    torch.testing.assert_close(out["pose_enc"], ref[-1], rtol=TOLERANCE, atol=TOLERANCE)
    # the heads on an aggregator output holding every layer read the last one too
    with torch.no_grad():
        again = model.heads(agg)["pose_enc_list"]
    for it, (got, want) in enumerate(zip(again, ref)):
        torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE, msg=f"iteration {it}")


def test_comparison_is_sensitive(converted):
    """The weights and input exercise every quirk: the iterations differ from each other, feeding
    the previous prediction matters, the last layer is read, the FoV ReLU clips some entries while
    translations and quaternions keep their negative values."""
    _, sd, agg, out = converted
    got = out["pose_enc_list"]
    scale = max(p.abs().max() for p in got)

    def far(a, b):
        return (a - b).abs().max() > 1e-3 * scale

    assert all(far(got[i], got[i + 1]) for i in range(ITERATIONS - 1))
    empty_only = ref_camera_head(sd, agg.layers[DEPTH - 1], feed_previous=False)
    assert all(far(g, w) for g, w in zip(got[1:], empty_only[1:]))
    other_layer = ref_camera_head(sd, agg.layers[DEPTH - 2])
    assert all(far(g, w) for g, w in zip(got, other_layer))
    stacked = torch.stack(got)
    assert (stacked[..., 7:] == 0).any() and (stacked[..., 7:] > 0).any()
    assert (stacked[..., :7] < 0).any()


def test_gradients_equal_vggt_restatement(converted):
    """Training signal: a weighted loss over all iterations back-propagates into the camera head's
    VGGT weights as in VGGT, where the sum `pred + delta` uses the detached previous prediction."""
    model, sd, agg, _ = converted
    head = model.camera_head
    weights = torch.tensor([0.6 ** (ITERATIONS - 1 - i) for i in range(ITERATIONS)], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    target = torch.randn(ITERATIONS, 2, 3, 9, generator=g, dtype=torch.float64)

    def loss_of(poses):
        return sum(w * ((p - t) ** 2).sum() for w, p, t in zip(weights, poses, target))

    head.zero_grad()
    loss_of([p.reshape(2, 3, 9) for p in head(agg, static=False)]).backward()
    got = {CAMERA + n: p.grad for n, p in head.named_parameters()}

    leaves = {k: v.clone().requires_grad_(True) for k, v in sd.items() if k.startswith(CAMERA)}
    ref_loss = loss_of(ref_camera_head({**sd, **leaves}, agg.layers[DEPTH - 1]))
    want = dict(zip(leaves, torch.autograd.grad(ref_loss, list(leaves.values()))))
    for k, grad in want.items():
        assert got[k] is not None, k
        torch.testing.assert_close(got[k], grad, rtol=GRAD_TOLERANCE, atol=GRAD_TOLERANCE * grad.abs().max(), msg=k)

    # the check tells VGGT's detached sum from an attached one
    attached = loss_of(ref_camera_head({**sd, **leaves}, agg.layers[DEPTH - 1], detach_sum=False))
    wrong = dict(zip(leaves, torch.autograd.grad(attached, list(leaves.values()))))
    k = CAMERA + "pose_branch.fc2.weight"
    assert (wrong[k] - want[k]).abs().max() > 1e-3 * want[k].abs().max()
