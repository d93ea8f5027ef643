"""Preference data in: reading and normalising pairs with every drop counted (``loading``), chat
messages as text (``chat``), the built-in synthetic task (``synthetic``), tokenisation with the
prompt/response boundary in token space (``tokenization``) and the evaluation prompt sets
(``prompt_sets``)."""
