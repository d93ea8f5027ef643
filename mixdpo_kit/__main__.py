"""``python -m mixdpo_kit`` (and ``accelerate launch -m mixdpo_kit``): the console script."""
import sys

from mixdpo_kit.interface.cli import main

sys.exit(main())
