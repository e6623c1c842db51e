"""The benchmark scripts (``bench_policy``, ``bench_train``, ``bench_anchors``, ``gpu_report``) run
and report what they promise (tiny preset, 32 px, a handful of calls; the figures themselves are
not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geovla_helpers import SCRIPTS, load_script


def test_bench_policy_reports_latency_breakdown_and_memory(tmp_path):
    out = tmp_path / "policy.json"
    report = load_script("bench_policy").main([
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
    assert Path(report["source"]) == SCRIPTS.parent


def test_bench_policy_sorts_kernels_from_their_wrappers():
    op_kind = load_script("bench_policy").op_kind
    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_kind("aten::_scaled_dot_product_efficient_attention") == "attention"
    assert op_kind("aten::addmm") == op_kind("aten::mkldnn_convolution") == "matmul"
    assert op_kind("aten::scaled_dot_product_attention") == op_kind("aten::linear") == "other"
    assert op_kind("aten::gelu") == "other"


def test_bench_policy_pairs_a_compiled_run_with_an_eager_one():
    side_arguments = load_script("bench_policy").side_arguments
    argv = ["--threads", "1", "--compile", "--compile-mode", "max-autotune", "--paired", "/tmp/old",
            "--paired-eager", "--rounds=4", "--out", "r.json"]
    other, this = side_arguments(argv, paired_eager=True)
    assert this == ["--threads", "1", "--compile", "--compile-mode", "max-autotune"]
    assert other == ["--threads", "1"]
    other, this = side_arguments(["--compile", "--paired=/tmp/old"], paired_eager=False)
    assert other == this == ["--compile"]


def test_bench_train_reports_throughput_memory_and_flops():
    report = load_script("bench_train").main([
        "--image-size", "32", "--threads", "1", "--batch", "2", "--warmup", "1", "--steps", "1",
        "--lora-rank", "4", "--grad-checkpointing",
    ])
    assert report["samples_per_s"] > 0 and report["peak_memory_mb"] > 0 and report["flops_per_step"] > 0
    assert report["trainable_params"] < report["params"]  # LoRA freezes the LLM and expert bases
    assert "geometry_loss" in report["losses"] and "flow_matching_loss" in report["losses"]
    assert "mfu" not in report  # MFU is for a GPU in bfloat16 only


def test_bench_anchors_times_smolvla_and_geovla_side_by_side(tmp_path, capsys):
    """LeRobot's smolvla on a small VLM directory written like the 500M one, next to geovla tiny
    (pi0's run is in test_lerobot_pi0_compat.py)."""
    script = load_script("bench_anchors")
    shape = {"text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "vocab_size": 1024},
             "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "patch_size": 16, "image_size": 64},
             "scale_factor": 2}
    vlm = script.write_smolvlm_dir(tmp_path / "vlm", shape)
    report = script.main(["--policies", "smolvla", "geovla-tiny", "--image-size", "64", "--chunk-size", "10",
                          "--calls", "2", "--warmup", "1", "--threads", "1", "--smolvla-vlm", str(vlm)])
    assert json.loads(capsys.readouterr().out) == report  # LeRobot's prints go to stderr
    assert set(report["policies"]) == {"smolvla", "geovla-tiny"} and report["chunk_size"] == 10
    for result in report["policies"].values():
        assert 0 < result["min_ms"] <= result["median_ms"] <= result["p95_ms"] and result["params"] > 0
        assert result["peak_memory_mb"] is None  # per policy on CUDA only
    assert report["process_peak_rss_mb"] > 0
    assert "speedup_vs_pi0" not in report["policies"]["smolvla"]  # no pi0 in this run


def test_bench_anchors_default_vlm_gives_smolvla_its_published_size(tmp_path):
    """SmolVLM2-500M's shape, cut to SmolVLA's 16 layers with its 0.75-wide expert: 450M parameters
    (built on the meta device: no memory, no initialisation)."""
    script = load_script("bench_anchors")
    args = script.parse_args(["--policies", "smolvla"])
    with torch.device("meta"):
        policy, _ = script.build_smolvla(args, script.write_smolvlm_dir(tmp_path / "vlm"))
    assert sum(p.numel() for p in policy.parameters()) == 450_046_176


def test_gpu_report_isolates_jobs_and_collects_them_in_one_report(tmp_path):
    """``--quick`` on the CPU: each benchmark runs in its own process and lands in report.json;
    the gsplat comparison, CUDA-only, fails with its reason and the other jobs still run."""
    report = load_script("gpu_report").main(["--device", "cpu", "--quick", "--jobs", "render", "train_full_lora",
                                             "--out", str(tmp_path)])
    assert json.loads((tmp_path / "report.json").read_text()) == report
    jobs = report["jobs"]
    assert list(jobs) == ["gsplat_parity", "voxel", "train_full_lora"]
    assert report["summary"]["failed_jobs"] == ["gsplat_parity"]
    assert "needs a CUDA GPU" in " ".join(jobs["gsplat_parity"]["error"])
    assert jobs["voxel"]["report"]["runs"][0]["voxelize_count_s"] > 0
    assert jobs["train_full_lora"]["report"]["trainable_params"] < jobs["train_full_lora"]["report"]["params"]
    assert "compare_gsplat.py" in (tmp_path / "report.log").read_text()


def test_gpu_report_stops_a_job_at_its_time_limit(tmp_path):
    report = load_script("gpu_report").main(["--device", "cpu", "--quick", "--jobs", "voxel", "--job-timeout", "0.5",
                                             "--out", str(tmp_path)])
    job = report["jobs"]["voxel"]
    assert job["exit_code"] is None and job["error"][-1] == "stopped after 0.5 s" and job["seconds"] < 30
    assert report["summary"]["failed_jobs"] == ["voxel"]


def test_gpu_report_takes_groups_or_single_jobs():
    script = load_script("gpu_report")
    args = script.parse_args(["--out", "x", "--jobs", "train", "voxel", "train_small"])
    assert script.expand(args.jobs) == ["train_small", "train_full_lora", "voxel"]
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--jobs", "policy_tiny"])


def test_gpu_report_checks_the_best_latency_and_the_mfu_against_the_targets():
    script = load_script("gpu_report")
    results = {
        "policy_small": {"exit_code": 0, "report": {"latency_ms": {"median": 18.0}}},
        "policy_small_compiled": {"exit_code": 0, "report": {"latency_ms": {"median": 9.5}}},
        "policy_full": {"exit_code": 1, "error": ["CUDA out of memory"]},
        "train_small": {"exit_code": 0, "report": {"mfu": 0.21}},
        "anchors": {"exit_code": 0, "report": {"policies": {"pi0": {"median_ms": 80.0, "speedup_vs_pi0": 1.0},
                                                            "geovla-small": {"median_ms": 10.0,
                                                                             "speedup_vs_pi0": 8.0}}}},
    }
    summary = script.summarise(results)
    assert summary["small_ms"] == {"eager": 18.0, "compiled": 9.5, "best": 9.5, "target": 15.0, "met": True}
    assert summary["full_ms"]["best"] is None and summary["full_ms"]["met"] is None
    assert summary["small_mfu"] == {"value": 0.21, "target": 0.35, "met": False}
    assert summary["speedup_vs_pi0"] == {"geovla-small": 8.0}
    assert summary["gsplat_within_tolerance"] is None and summary["gsplat_speedup"] is None
    assert summary["failed_jobs"] == ["policy_full"]
