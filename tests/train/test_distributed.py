"""Data-parallel pre-training (what a multi-GPU Ray Train trial runs), here on 2 CPU processes with gloo."""

import json

import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init_file: str, root: str) -> None:
    import os

    os.environ["PMGFLOW_CACHE"] = os.path.join(root, "cache")
    from pmgflow.spec.train import PretrainSpec
    from pmgflow.train.pretrain import pretrain

    model = {"preset": "tiny", "frames": 4, "img_size": 16, "patch": 4, "embed_dim": 32, "depth": 2,
             "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}
    spec = PretrainSpec(model=model, source={"kind": "fractal", "categories": 2, "images": 16, "size": 32},
                        epochs=2, batch_size=8, threads=1)

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = pretrain(spec, root=root)
        with open(os.path.join(root, f"rank{rank}.json"), "w") as f:
            json.dump({"ranks": result["ranks"], "run_dir": result["run_dir"]}, f)
    finally:
        dist.destroy_process_group()


def test_two_rank_pretraining_writes_one_run(tmp_path):
    # fork: the worker needs no import by name (the tests directory is not a package)
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["ranks"] == r1["ranks"] == 2 and r0["run_dir"] == r1["run_dir"]
    (run,) = tmp_path.glob("pretrain-*")
    assert (run / "result.json").is_file() and (run / "model.pt").is_file()
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
