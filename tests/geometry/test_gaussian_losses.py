"""TemporalTracker and the voxel-path losses."""

import pytest
import torch

from geometry.gaussians.losses import (distillation_loss, matched_change, render_l1, static_dynamic_loss,
                                       teacher_targets, temporal_consistency_loss)
from geometry.gaussians.tracker import TemporalTracker, match_ids


def test_match_ids_example_and_tracker_window():
    assert match_ids(torch.tensor([7, 3, 5]), torch.tensor([3, 5, 9]), torch.tensor([True, False, True])).tolist() == [-1, 0, -1]
    ids = torch.tensor([[[1, 2, 3], [2, 3, 4], [3, 4, 5], [1, 3, 6]]])
    valid = torch.ones_like(ids, dtype=torch.bool)
    m = TemporalTracker(3)(ids, valid)
    assert m.shape == (1, 4, 3, 3)
    assert m[0, 0, 0].tolist() == [-1, -1, -1]  # no t = -1
    assert m[0, 0, 1].tolist() == [0, 1, 2]  # itself
    assert m[0, 0, 2].tolist() == [-1, 0, 1]  # ids 2, 3 at t = 1
    assert m[0, 3, 0].tolist() == [-1, 0, -1]  # id 3 at t = 2 sits at index 0
    with pytest.raises(ValueError, match="window"):
        TemporalTracker(2)


def test_render_l1_and_distillation():
    torch.manual_seed(0)
    img = torch.rand(1, 1, 2, 3, 8, 8)
    assert render_l1(img, img) == 0 and render_l1(img, img + 0.1) == pytest.approx(0.1, abs=1e-6)
    mask = torch.zeros(1, 1, 2, 8, 8, dtype=torch.bool)
    assert render_l1(img + 0.5 * mask.unsqueeze(3), img, ~mask) == 0
    teacher = torch.randn(1, 1, 2, 4, 83)
    weights = torch.tensor([[[[0.5, 1.0, 0.0, 0.2], [0.5, 0.0, 0.0, 0.8]]]])
    target = teacher_targets(teacher, weights)
    ids = torch.tensor([[[3, 5, 8, 9]]])
    perm = torch.tensor([2, 0, 3, 1])  # student in another order: matching is by id
    student = target[:, :, perm].clone().requires_grad_()
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    teacher.requires_grad_()
    loss = distillation_loss(student, ids[:, :, perm], valid, teacher, ids, weights)
    assert float(loss.detach()) < 1e-10  # id 8 has no teacher weight and is skipped
    moved = student + 1.0
    loss = distillation_loss(moved, ids[:, :, perm], valid, teacher, ids, weights)
    assert float(loss.detach()) == pytest.approx(1.0, abs=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad is not None  # the teacher is a fixed target


def test_temporal_consistency_counts_static_matched_voxels_only():
    ids = torch.tensor([[[1, 2], [1, 2]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    matches = TemporalTracker(3)(ids, valid)
    params = torch.zeros(1, 2, 2, 4)
    means = torch.zeros(1, 2, 2, 3)
    params[0, 1, 1] = 7.0  # voxel id 2 changes
    static = torch.tensor([[[True, False], [True, False]]])
    assert float(temporal_consistency_loss(params, means, matches, valid, static)) == 0
    assert float(temporal_consistency_loss(params, means, matches, valid, torch.ones_like(static))) > 1
    change, matched = matched_change(params, matches, valid)
    assert matched.all() and change[0, :, 1].tolist() == [7.0, 7.0] and change[0, :, 0].tolist() == [0.0, 0.0]


def test_static_dynamic_separation_learns_which_voxels_move():
    change = torch.tensor([[[0.0, 0.02, 0.5, 1.0]]])
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=50.0)
    first = float(static_dynamic_loss(logits, change, valid).detach())
    for _ in range(100):
        loss = static_dynamic_loss(logits, change, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    assert (torch.sigmoid(logits)[0, 0] > 0.5).tolist() == [True, True, False, False]
    target = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    good = static_dynamic_loss(torch.tensor([[[5.0, -5.0, 5.0, -5.0]]]), change, valid, target)
    bad = static_dynamic_loss(-torch.tensor([[[5.0, -5.0, 5.0, -5.0]]]), change, valid, target)
    assert float(good) < 0.01 < float(bad)
