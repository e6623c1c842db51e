"""The patch embed's position embedding follows VGGT: the checkpoint's square table is kept as it is
and resampled at run time straight to each input's patch grid (DINOv2's interpolate_pos_encoding
as VGGT configures it: output size, bicubic, antialiased, float32). A model converted from
VGGT-named random weights with VGGT's 37 x 37 table and 14 px patches gives VGGT's patch tokens
at 518 x 518, 392 x 518, 378 x 378, 294 x 518 and the presets' own 224 x 224."""

import pytest
import torch
import torch.nn.functional as F

from geometry.config import make_config
from geometry.model import GeometryModel
from geometry.patch_embed import interpolate_pos_embed
from geometry.pretrained import convert_vggt_state_dict, load_vggt_weights
from test_geometry_vggt import _block_shapes, ref_dinov2_patch_tokens, ref_dinov2_tokens

C, PE_DEPTH, PATCH, TABLE = 64, 2, 14, 37  # VGGT-1B's patch and table; small width and depth
SIZES = [(518, 518), (392, 518), (378, 378), (294, 518), (518, 294), (224, 224)]
TOLERANCE = 1e-12  # float64, after the blocks; measured: at most 1.8e-15 (0 before the blocks)


def vggt_patch_embed_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """VGGT-named patch-embed weights (DINOv2 ViT, 37 x 37 table plus the class position), all
    random, LayerScale included: float32 values held in float64, so that VGGT's float32 pass over
    the table when it resamples (class position included) loses nothing and float64 compares tightly."""
    shapes = {"aggregator.patch_embed.cls_token": (1, 1, C), "aggregator.patch_embed.pos_embed": (1, 1 + TABLE ** 2, C),
              "aggregator.patch_embed.register_tokens": (1, 4, C), "aggregator.patch_embed.mask_token": (1, C),
              "aggregator.patch_embed.patch_embed.proj.weight": (C, 3, PATCH, PATCH),
              "aggregator.patch_embed.patch_embed.proj.bias": (C,),
              "aggregator.patch_embed.norm.weight": (C,), "aggregator.patch_embed.norm.bias": (C,)}
    for i in range(PE_DEPTH):
        shapes.update(_block_shapes(f"aggregator.patch_embed.blocks.{i}.", C, qk_norm=False))
    g = torch.Generator().manual_seed(seed)
    return {k: ((1.0 if "norm" in k and k.endswith("weight") else 0.0) + 0.1 * torch.randn(s, generator=g)).double()
            for k, s in shapes.items()}


def _model(**overrides) -> GeometryModel:
    config = make_config("tiny", img_size=224, patch_size=PATCH, embed_dim=C, patch_embed_depth=PE_DEPTH,
                         patch_embed_heads=4, track_head=False, **overrides)
    return GeometryModel(config).double().eval()


@pytest.fixture(scope="module")
def converted():
    sd = vggt_patch_embed_state_dict()
    model = _model(pos_embed_grid=TABLE)
    load_vggt_weights(model, sd)
    return sd, model.aggregator.patch_embed


@torch.no_grad()
@pytest.mark.parametrize("size", SIZES)
def test_patch_tokens_equal_vggt_restatement(converted, size):
    sd, patch_embed = converted
    vit = patch_embed.vit
    assert vit.pos_embed.shape == (1, TABLE * TABLE, C)  # the checkpoint's table, not resampled at load
    frames = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # the tokens entering the blocks: class, registers, patches plus their (resampled) positions
    tokens = vit._pos_embed(vit.patch_embed(frames))
    torch.testing.assert_close(tokens, ref_dinov2_tokens(sd, frames, PATCH), rtol=0, atol=0)
    # the patch tokens the aggregator reads
    out = patch_embed(frames)
    ref = ref_dinov2_patch_tokens(sd, frames, PATCH, PE_DEPTH)
    assert out.shape == (2, (size[0] // PATCH) * (size[1] // PATCH), C)
    torch.testing.assert_close(out, ref, rtol=TOLERANCE, atol=TOLERANCE)


def test_recipe_matters():
    """What the test above tells apart: VGGT's table at 378 x 378 differs by more than 1% of its
    largest value from bicubic without antialiasing, and from resampling 37 -> 27 at load time and
    then 27 -> 28 x 37 at run time (the converter's old way, here at 392 x 518)."""
    table = vggt_patch_embed_state_dict()["aggregator.patch_embed.pos_embed"][:, 1:]
    vggt = interpolate_pos_embed(table, (27, 27))
    grid = table.float().reshape(1, TABLE, TABLE, C).permute(0, 3, 1, 2)
    plain = F.interpolate(grid, size=(27, 27), mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, C).double()
    assert (vggt - plain).abs().max() > 0.01 * vggt.abs().max()
    twice = interpolate_pos_embed(plain, (28, 37))
    once = interpolate_pos_embed(table, (28, 37))
    assert (once - twice).abs().max() > 0.01 * once.abs().max()
    assert torch.equal(interpolate_pos_embed(table, (TABLE, TABLE)), table)  # VGGT's own grid: as stored
    with pytest.raises(ValueError, match="not a square grid"):
        interpolate_pos_embed(table[:, :-1], (27, 27))


def test_full_preset_keeps_vggt_table_and_tiny_its_own():
    assert make_config("full").position_grid == TABLE
    assert make_config("full", img_size=224).position_grid == TABLE  # a policy's image size keeps it
    tiny = make_config("tiny")
    assert tiny.pos_embed_grid is None and tiny.position_grid == tiny.img_size // tiny.patch_size
    model = GeometryModel(tiny)
    assert model.aggregator.patch_embed.vit.pos_embed.shape == (1, (64 // 8) ** 2, 64)
    with pytest.raises(ValueError, match="pos_embed_grid"):
        make_config("tiny", pos_embed_grid=0)


def test_converter_names_the_table_size():
    sd = vggt_patch_embed_state_dict()
    with pytest.raises(ValueError, match=r"37 x 37, the model's 16 x 16; build the model with pos_embed_grid=37"):
        convert_vggt_state_dict(sd, _model())  # 224 px / 14: a 16 x 16 table


@torch.no_grad()
def test_checkpoint_with_another_table_size_loads_as_saved():
    """A model saved with one table size (e.g. a `full` model saved before its table became 37 x 37)
    loads strictly into a model built with another, keeps the saved table and computes as before."""
    torch.manual_seed(0)
    saved = _model()  # 16 x 16 table
    state = saved.state_dict()
    loaded = _model(pos_embed_grid=TABLE)
    loaded.load_state_dict(state)  # strict
    assert loaded.aggregator.patch_embed.vit.pos_embed.shape == (1, 16 * 16, C)
    frames = torch.randn(2, 3, 224, 294, dtype=torch.float64)
    torch.testing.assert_close(loaded.aggregator.patch_embed(frames), saved.aggregator.patch_embed(frames), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch"):  # another width is still an error
        bad = dict(state)
        bad["aggregator.patch_embed.vit.pos_embed"] = torch.zeros(1, 16 * 16, C + 1, dtype=torch.float64)
        _model().load_state_dict(bad)
