"""The project's own calls raise no deprecation warnings and print no upstream notices (issue: quiet, current calls).

Each check runs in a fresh interpreter, so that import-time messages (bitsandbytes' kernel-hub notice, printed when
diffusers imports it) are seen as a user sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from promptloop.world.backbone import load_backbone
    load_backbone()                                  # the world backbone: diffusers models + MiniLM
    from promptloop.testing.pipelines import tiny_sd_pipeline
    from promptloop.train.components import load_pipeline
    from promptloop.train.config import PipelineConfig
    tiny_sd_pipeline(seed=0).save_pretrained(sys.argv[1])
    load_pipeline(PipelineConfig(name_or_path=sys.argv[1]), "cpu")  # DiffusionPipeline.from_pretrained
    from promptloop.testing.policies import tiny_llava_policy
    policy = tiny_llava_policy(seed=0).enable_lora(r=2)              # PEFT wrap
    policy.save_pretrained(sys.argv[2])
print(json.dumps([f"{w.category.__name__}: {w.message}" for w in caught
                  if issubclass(w.category, (FutureWarning, DeprecationWarning))]))
'''
# deprecations raised inside upstream code by upstream code, not by anything PromptLoop passes or calls
UPSTREAM_INTERNAL = (
    "`torch.jit.script_method` is deprecated",     # torch, from transformers' own modules at import
    "__array__ implementation doesn't accept a copy keyword",  # diffusers' schedulers building their sigmas
)


def test_own_calls_raise_no_deprecation_and_print_no_kernel_hub_notice(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "pipe"), str(tmp_path / "policy")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kernels-community" not in proc.stderr and "gemm_4bit_forward" not in proc.stderr, proc.stderr
    found = [w for w in json.loads(proc.stdout.strip().splitlines()[-1]) if not any(u in w for u in UPSTREAM_INTERNAL)]
    assert found == [], found
