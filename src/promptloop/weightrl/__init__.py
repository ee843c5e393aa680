"""Weight-level RL baselines: methods that tune the diffusion model's own weights on a reward (DDPO), the
alternative PromptLoop is compared with and composed with (paper claims iii and iv; issue 31).

- `ddim_logprob`: the Gaussian log-density of one stochastic DDIM step, what the policy gradient differentiates;
- `config`: `DDPOConfig`, every field commented;
- `ddpo`: the trainer (rollout / score / update), resumable from atomic checkpoints, `promptloop world ddpo`.
"""

from promptloop.weightrl.config import DDPOConfig
from promptloop.weightrl.ddim_logprob import ddim_step_with_logprob

__all__ = ["DDPOConfig", "ddim_step_with_logprob"]
