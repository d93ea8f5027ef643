"""What a pair is trained with: pure registered preference losses (``losses``) and the named
objectives that route each pair to SFT, a preference loss or neither (``routing``).

It sits just above ``core`` (the configuration). Importing this package fills both registries and
registers with the config the checks that need them (a loss parameter no loss or objective has is
an error when a config is built); the package's ``__init__`` imports it first."""
from mixdpo_kit.core.config import register_config_check, register_legacy_reader
from mixdpo_kit.objectives import losses, routing  # noqa: F401  (each module registers its own entries)

register_config_check(lambda cfg: routing.check_loss_params(cfg.loss))
register_legacy_reader(routing.drop_legacy_loss_settings)
