"""Models and what they compute: the QLoRA policy whose reference is its adapter switched off
(``model``), local tiny models (``tiny``) and the built-in task's reward model (``reward_model``),
a model's shape from its config (``shape``), pairs as model rows (``pairbatch``), the one log-prob
path (``logprobs``), the reference log-prob cache (``refcache``), and memory and time estimates
from a model's config (``memory``, ``cost``)."""
