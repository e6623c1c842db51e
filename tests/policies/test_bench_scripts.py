"""The benchmark scripts (``bench_policy``, ``bench_train``, ``bench_anchors``, ``gpu_report``) run
and report what they promise (tiny preset, 32 px, LeRobot's policies at toy sizes, a handful of
calls; the timings themselves are not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geovla_helpers import ROOT, load_script


def test_bench_policy_reports_latency_breakdown_and_memory(tmp_path):
    out = tmp_path / "policy.json"
    report = load_script("perf/bench_policy").main([
        "--image-size", "32", "--threads", "1", "--warmup", "1", "--calls", "3", "--breakdown-calls", "2",
        "--out", str(out),
    ])
    assert out.exists() and report["cameras"] == 3 and report["n_obs_steps"] == 2 and report["flow_steps"] == 10
    latency = report["latency_ms"]
    assert 0 < latency["min"] <= latency["median"] <= latency["p95"]
    parts = report["breakdown_ms"]
    assert set(parts) == {"geometry", "backbone", "prefix", "denoising", "other"}
    assert all(parts[k] > 0 for k in ("geometry", "backbone", "prefix", "denoising"))
    kernels = report["kernels_ms"]
    assert set(kernels) == {"attention", "matmul", "other"} and kernels["attention"] > 0 and kernels["matmul"] > 0
    assert kernels["attention"] + kernels["matmul"] < latency["median"]
    assert report["peak_memory_mb"] > 0
    assert len(report["chunk"]) == 10 and len(report["chunk"][0]) == 4
    assert Path(report["source"]) == ROOT


def test_bench_policy_sorts_kernels_from_their_wrappers():
    op_kind = load_script("perf/bench_policy").op_kind
    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_kind("aten::_scaled_dot_product_efficient_attention") == "attention"
    assert op_kind("aten::addmm") == op_kind("aten::mkldnn_convolution") == "matmul"
    assert op_kind("aten::scaled_dot_product_attention") == op_kind("aten::linear") == "other"
    assert op_kind("aten::gelu") == "other"


def test_bench_policy_pairs_a_compiled_run_with_an_eager_one():
    side_arguments = load_script("perf/bench_policy").side_arguments
    argv = ["--threads", "1", "--compile", "--compile-mode", "max-autotune", "--paired", "/tmp/old",
            "--paired-eager", "--rounds=4", "--out", "r.json"]
    other, this = side_arguments(argv, paired_eager=True)
    assert this == ["--threads", "1", "--compile", "--compile-mode", "max-autotune"]
    assert other == ["--threads", "1"]
    other, this = side_arguments(["--compile", "--paired=/tmp/old"], paired_eager=False)
    assert other == this == ["--compile"]


def test_bench_train_reports_throughput_memory_and_flops():
    report = load_script("perf/bench_train").main([
        "--image-size", "32", "--threads", "1", "--batch", "2", "--warmup", "1", "--steps", "1",
        "--lora-rank", "4", "--grad-checkpointing",
    ])
    assert report["samples_per_s"] > 0 and report["peak_memory_mb"] > 0 and report["flops_per_step"] > 0
    assert report["trainable_params"] < report["params"]  # LoRA freezes the LLM and expert bases
    assert "geometry_loss" in report["losses"] and "flow_matching_loss" in report["losses"]
    assert "mfu" not in report  # MFU is for a GPU in bfloat16 only


def count(module: torch.nn.Module) -> int:
    """How many parameters ``module`` holds."""
    return sum(p.numel() for p in module.parameters())


TOY_ANCHORS = ["--toy", "--image-size", "64", "--chunk-size", "10", "--threads", "1"]


def test_bench_anchors_times_lerobot_pi0_pi05_smolvla_next_to_geovla(capsys):
    """LeRobot's three policies at toy sizes and geovla tiny in one run: one JSON on stdout (LeRobot's
    prints go to stderr), the token counts each one's processor would give it, pi0 as the reference."""
    script = load_script("perf/bench_anchors")
    report = script.main(["--policies", "pi0", "pi05", "smolvla", "geovla-tiny", "--calls", "2", "--warmup", "1",
                          *TOY_ANCHORS])
    assert json.loads(capsys.readouterr().out) == report
    assert report["toy"] and report["chunk_size"] == 10 and report["versions"]["lerobot"] == "0.6.1"
    policies = report["policies"]
    assert list(policies) == ["pi0", "pi05", "smolvla", "geovla-tiny"]
    assert {name: r["language_tokens"] for name, r in policies.items()} == {
        "pi0": 48, "pi05": 200, "smolvla": 16, "geovla-tiny": 16}
    for result in policies.values():
        assert 0 < result["min_ms"] <= result["median_ms"] <= result["p95_ms"] and result["params"] > 0
        assert result["peak_memory_mb"] is None  # per policy on CUDA only
        assert result["speedup_vs_pi0"] == pytest.approx(policies["pi0"]["median_ms"] / result["median_ms"],
                                                         rel=1e-2)
    assert policies["pi0"]["speedup_vs_pi0"] == 1.0
    assert report["process_peak_rss_mb"] > 0


def test_bench_anchors_runs_lerobots_own_classes_on_their_inputs(tmp_path):
    """Each toy anchor is LeRobot's class; its chunk has the right shape, is finite, is the same
    for the same noise and changes with the frames. pi05's expert norms are adaptive (conditioned
    on the flow time), pi0's are not; the toy sizes apply only while a policy is built."""
    from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    script = load_script("perf/bench_anchors")
    args = script.parse_args(TOY_ANCHORS)
    generator = torch.Generator().manual_seed(0)
    for name, policy_class in (("pi0", PI0Policy), ("pi05", PI05Policy), ("smolvla", SmolVLAPolicy)):
        torch.manual_seed(0)
        policy, tokens = script.build(name, args, tmp_path)
        assert type(policy) is policy_class
        batch, fresh = (script.batch_for(args, tokens, torch.device("cpu"), generator) for _ in range(2))
        other = {**batch, **{key: value for key, value in fresh.items() if key.startswith("observation.images.")}}
        chunks = []
        for observation in (batch, batch, other):
            torch.manual_seed(1)  # the same noise for every call
            chunks.append(policy.predict_action_chunk(observation))
        assert chunks[0].shape == (1, 10, script.ACTION_DIM) and bool(torch.isfinite(chunks[0]).all())
        assert torch.equal(chunks[0], chunks[1])
        assert (chunks[0] - chunks[2]).abs().max() > 1e-4, name
        if name != "smolvla":
            norm = policy.model.paligemma_with_expert.gemma_expert.model.layers[0].input_layernorm
            assert (norm.dense is not None) == (name == "pi05")
            assert script.pi_modules(name)[2].get_gemma_config("gemma_2b").width == 2048


def test_bench_anchors_refuses_a_chunk_of_the_wrong_shape_or_not_finite():
    script = load_script("perf/bench_anchors")
    script.check_chunk(object(), torch.zeros(1, 10, 4), 10)
    with pytest.raises(SystemExit, match=r"expected \(1, 10, 4\)"):
        script.check_chunk(object(), torch.zeros(1, 10, 3), 10)
    with pytest.raises(SystemExit, match="non-finite"):
        script.check_chunk(object(), torch.full((1, 10, 4), float("nan")), 10)


def test_bench_anchors_full_sizes_are_the_published_ones(tmp_path):
    """Built at full size on the meta device (no memory, no initialisation): pi0 and pi05 hold
    PaliGemma 3B exactly (SigLIP So400m/14, projector, Gemma 2B: 2,923,335,408 parameters) and a
    Gemma 300M expert, of which pi05 makes all 37 norms adaptive (a 1024 -> 3 x 1024 modulation
    each, in place of a scale); LeRobot also builds two vocabulary heads that a policy never uses
    (PaliGemma's, untied from its embeddings, and the expert's). SmolVLA on SmolVLM2-500M's shape,
    cut to its 16 layers with its 0.75-wide expert, has its published 450M."""
    script = load_script("perf/bench_anchors")
    args = script.parse_args([])
    parts = {}
    for name in script.PI_POLICIES:
        config = script.pi_config(args, name)
        config.device = "meta"  # the policy moves itself to its config's device once built
        with torch.device("meta"):
            policy = script.pi_modules(name)[1](config)
        model = policy.model.paligemma_with_expert
        paligemma = model.paligemma.model
        assert count(paligemma.vision_tower) + count(paligemma.multi_modal_projector) + count(
            paligemma.language_model) == 2_923_335_408
        assert model.paligemma.lm_head.weight is not paligemma.language_model.embed_tokens.weight
        assert count(model.paligemma.lm_head) == count(model.gemma_expert.lm_head) * 2 == 257_152 * 2048
        parts[name] = {"expert": count(model.gemma_expert.model), "total": count(policy)}
    assert parts["pi0"] == {"expert": 311_464_960, "total": 4_028_019_472}
    assert parts["pi05"]["expert"] - parts["pi0"]["expert"] == 37 * (1024 * 3 * 1024 + 3 * 1024 - 1024)
    assert parts["pi05"]["total"] == 4_143_404_816
    with torch.device("meta"):
        policy, _ = script.build_smolvla(args, script.write_smolvlm_dir(tmp_path / "vlm"))
    assert count(policy) == 450_046_176


def test_gpu_report_isolates_jobs_and_collects_them_in_one_report(tmp_path):
    """``--quick`` on the CPU: each benchmark runs in its own process and lands in report.json;
    the gsplat comparison, CUDA-only, fails with its reason and the other jobs still run. The
    anchors job times LeRobot's pi0, pi05 and smolvla at toy sizes in bfloat16 next to geovla."""
    report = load_script("scripts/gpu_report").main(["--device", "cpu", "--quick", "--jobs", "render", "anchors",
                                             "train_full_lora", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "report.json").read_text()) == report
    jobs = report["jobs"]
    assert list(jobs) == ["gsplat_parity", "voxel", "anchors", "train_full_lora"]
    anchors = jobs["anchors"]["report"]
    assert anchors["toy"] and anchors["dtype"] == "bfloat16"
    assert set(report["summary"]["speedup_vs_pi0"]) == {"pi05", "smolvla", "geovla-tiny"}
    assert all(ms > 0 for ms in report["summary"]["anchors_median_ms"].values())
    assert report["summary"]["failed_jobs"] == ["gsplat_parity"]
    assert "needs a CUDA GPU" in " ".join(jobs["gsplat_parity"]["error"])
    assert jobs["voxel"]["report"]["runs"][0]["voxelize_count_s"] > 0
    assert jobs["train_full_lora"]["report"]["trainable_params"] < jobs["train_full_lora"]["report"]["params"]
    assert "compare_gsplat.py" in (tmp_path / "report.log").read_text()


def test_gpu_report_stops_a_job_at_its_time_limit(tmp_path):
    report = load_script("scripts/gpu_report").main(["--device", "cpu", "--quick", "--jobs", "voxel", "--job-timeout", "0.5",
                                             "--out", str(tmp_path)])
    job = report["jobs"]["voxel"]
    assert job["exit_code"] is None and job["error"][-1] == "stopped after 0.5 s" and job["seconds"] < 30
    assert report["summary"]["failed_jobs"] == ["voxel"]


def test_gpu_report_takes_groups_or_single_jobs():
    script = load_script("scripts/gpu_report")
    args = script.parse_args(["--out", "x", "--jobs", "train", "voxel", "train_small"])
    assert script.expand(args.jobs) == ["train_small", "train_full_lora", "voxel"]
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--jobs", "policy_tiny"])


def test_gpu_report_checks_the_best_latency_and_the_mfu_against_the_targets():
    script = load_script("scripts/gpu_report")
    results = {
        "policy_small": {"exit_code": 0, "report": {"latency_ms": {"median": 18.0}}},
        "policy_small_compiled": {"exit_code": 0, "report": {"latency_ms": {"median": 9.5}}},
        "policy_full": {"exit_code": 1, "error": ["CUDA out of memory"]},
        "train_small": {"exit_code": 0, "report": {"mfu": 0.21}},
        "anchors": {"exit_code": 0, "report": {"policies": {
            "pi0": {"median_ms": 80.0, "speedup_vs_pi0": 1.0}, "pi05": {"median_ms": 100.0, "speedup_vs_pi0": 0.8},
            "smolvla": {"median_ms": 40.0, "speedup_vs_pi0": 2.0},
            "geovla-small": {"median_ms": 10.0, "speedup_vs_pi0": 8.0}}}},
    }
    summary = script.summarise(results)
    assert summary["small_ms"] == {"eager": 18.0, "compiled": 9.5, "best": 9.5, "target": 15.0, "met": True}
    assert summary["full_ms"]["best"] is None and summary["full_ms"]["met"] is None
    assert summary["small_mfu"] == {"value": 0.21, "target": 0.35, "met": False}
    assert summary["anchors_median_ms"] == {"pi0": 80.0, "pi05": 100.0, "smolvla": 40.0, "geovla-small": 10.0}
    assert summary["speedup_vs_pi0"] == {"pi05": 0.8, "smolvla": 2.0, "geovla-small": 8.0}
    assert summary["gsplat_within_tolerance"] is None and summary["gsplat_speedup"] is None
    assert summary["failed_jobs"] == ["policy_full"]


def _write_metrics(run: Path, losses: list[float], samples_per_s: float) -> Path:
    run.mkdir()
    rows = [{"step": 10 * (i + 1), "loss": v, "flow_matching_loss": v / 2, "samples_per_s": samples_per_s}
            for i, v in enumerate(losses)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_compare_train_precision_reports_the_loss_difference_against_the_tolerance(tmp_path):
    script = load_script("perf/compare_train_precision")
    a = _write_metrics(tmp_path / "no", [4.0, 2.0, 1.0, 1.0], 10.0)
    b = _write_metrics(tmp_path / "bf16", [4.0, 2.0, 1.1, 1.1], 15.0)
    report = script.main([str(a), str(b), "--window", "2", "--tolerance", "0.05", "--plot", str(tmp_path / "c.png")])
    assert report["window_steps"] == [30, 40]
    assert report["losses"]["loss"] == {"a": 1.0, "b": 1.1, "relative_difference": 0.1, "within_tolerance": False}
    assert report["losses"]["flow_matching_loss"]["relative_difference"] == 0.1
    assert "geometry_loss" not in report["losses"]  # neither run logged it
    assert report["samples_per_s"] == {"a": 10.0, "b": 15.0}
    assert (tmp_path / "c.png").stat().st_size > 0
    assert script.main([str(a), str(b), "--window", "2", "--tolerance", "0.2"])["losses"]["loss"]["within_tolerance"]

    _write_metrics(tmp_path / "short", [4.0, 2.0, 1.0], 10.0)
    with pytest.raises(ValueError, match="different steps"):
        script.main([str(a), str(tmp_path / "short")])
