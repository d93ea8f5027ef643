"""What a pair is trained with: pure registered preference losses (``losses``) and the named
objectives that route each pair to SFT, a preference loss or neither (``routing``).

The lowest layer: it imports nothing else of the kit, so every other stage may use it. Importing
this package fills both registries."""
from mixdpo_kit.objectives import losses, routing  # noqa: F401  (each module registers its own entries)
