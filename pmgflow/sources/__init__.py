"""Pre-training video sources beside PMG (pmgflow/pmg): synthetic moving shapes, MoSI-style pseudo camera
motion, and the mix of sources that makes each pre-training batch (pmgflow/sources/mix.py)."""
