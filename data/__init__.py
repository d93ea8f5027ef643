"""Data that ships with mixdpo-kit, installed as the package ``mixdpo_kit.shipped_data`` (see
pyproject.toml) and read through ``importlib.resources``: the built-in task's files
(``synthetic/``) and a sample of real rated pairs with its licence (``ultrafeedback-sample/``)."""
