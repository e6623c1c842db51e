"""The benchmark suite: every policy trained by ``lerobot-train`` and evaluated by ``lerobot-eval``
on the same demonstrations, budget and held-out seeds (entry point: ``scripts/benchmark.py``).

- ``budgets``: what each policy gets (demonstrations, optimiser steps, evaluation episodes).
- ``suites``: the task families (``builtin``; a new one is a :class:`~benchmarks.suites.Suite`
  added to ``SUITES``).
- ``datasets``: a task's demonstrations, recorded once, with and without geometry features.
- ``policy_specs``: how each policy is built, as ``lerobot-train`` arguments.
- ``language``: the local word-level VLM / tokenizer directory SmolVLA and pi0 read instructions with.
- ``pi0_sizes`` and ``lerobot_runner``: pi0 at geovla-tiny widths, trained and evaluated in-process.
- ``processes``, ``training``, ``evaluation``: one cell's ``lerobot-train`` (resumable) and ``lerobot-eval``.
- ``state``: the atomically written state file that makes a stopped run resumable.
- ``report``: ``results.json``, the markdown table and the plot.
- ``harness``: the loop over cells.
"""
