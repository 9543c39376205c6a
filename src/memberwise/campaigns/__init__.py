"""Campaigns and the experiments that measure them: deterministic assignment to arms and the
analysis of results (sample-ratio mismatch, delta method, CUPED, always-valid intervals,
Benjamini-Hochberg, Qini). See docs/experiments.md."""
