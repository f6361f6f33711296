"""Meta-RL sanity tasks: Bernoulli bandits and random tabular MDPs (Duan et al. 2016) as batched envs
(``env.py``), and their reference policies (``baselines.py``: random, UCB1, Thompson sampling, posterior sampling
for MDPs and the per-trial oracles), on which a meta-RL agent is checked before it meets the allocator.

May import: ``dreamalloc.core``. Not the other domains, agents or the experiment layer.
"""

from dreamalloc.metatasks.env import BanditCore, BanditDomain, TabularMDPCore, TabularMDPDomain, split_obs

__all__ = ["BanditCore", "BanditDomain", "TabularMDPCore", "TabularMDPDomain", "split_obs"]
