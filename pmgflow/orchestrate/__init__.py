"""Orchestration of the paper's ablations: sweeps on Ray Tune, tracking in MLflow, tables beside the paper's.

sweep.py runs a sweep (local Ray or a cluster, or as a Ray job), trial.py is one trial (pre-training shared
by spec hash, then fine-tuning), tracking.py the MLflow parent and child runs, report.py the ablation table,
paper.py the paper's numbers.
"""
