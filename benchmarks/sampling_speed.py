"""Print the world backbone's plain sampling speed (images/s) for a few batch sizes and step counts."""

import json
import time

import torch

from promptloop.world.backbone import load_backbone
from promptloop.world.sampling import sample
from promptloop.world.shapes.prompts import sample_prompts

if __name__ == "__main__":
    pipe = load_backbone()
    rows = []
    for batch in (1, 16, 64):
        for steps in (20, 50):
            queries = [it.caption for it in sample_prompts("heldout", batch, seed=0)]
            sample(pipe, queries, list(range(batch)), steps=steps, progress=False)  # warm-up
            t0 = time.perf_counter()
            sample(pipe, queries, list(range(batch)), steps=steps, progress=False)
            dt = time.perf_counter() - t0
            rows.append({"batch": batch, "steps": steps, "seconds": dt, "images_per_second": batch / dt})
    print(json.dumps({"threads": torch.get_num_threads(), "runs": rows}, indent=2))
