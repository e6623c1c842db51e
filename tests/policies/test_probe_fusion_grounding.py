"""``studies/probe_fusion_grounding.py``: synthetic scenes match the expert, and the probe trains."""

from __future__ import annotations

import torch
from geovla_helpers import load_script

from vla.tokenizer import make_file_free_tokenizer


def test_synthetic_targets_are_the_reach_experts_first_move():
    probe = load_script("studies/probe_fusion_grounding")
    scenes = probe.SyntheticScenes(make_file_free_tokenizer("word"), distractors=5)
    scene = scenes.sample(8, torch.Generator().manual_seed(0))
    assert scene["xyz"].shape == (8, 8, 3) and scene["rgb"].shape == (8, 8, 3)
    step = scene["actions"][:, 0, :3]
    torch.testing.assert_close(step.abs().amax(-1), torch.ones(8))  # full speed: every hand is steps away
    # the horizontal move points at the named object: same direction as object minus hand
    cosine = torch.nn.functional.cosine_similarity(step[:, :2], scene["direction"], dim=-1)
    assert bool((cosine > 0.999).all())


def test_the_probe_lowers_the_flow_matching_loss():
    torch.set_num_threads(1)
    result = load_script("studies/probe_fusion_grounding").run_probe(steps=40, bidirectional=True, distractors=10,
                                                            evaluations=2)
    first, last = result["curve"][0], result["curve"][-1]
    assert [p["step"] for p in result["curve"]] == [20, 40]
    assert last["loss"] < 0.8  # from about 1.4 at initialisation
    assert -1.0 <= last["direction_cosine"] <= 1.0 and first["first_action_error"] > 0
