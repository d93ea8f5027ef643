"""How hard each pair is, and the order it is trained in: the registry of margin sources and their
statistics (``sources``), the model-based sources (``scoring``), the split at tau (``split``) and
the curriculum (``curriculum``).

Importing this package fills the margin-source registry: the data sources are defined in
``sources``, the model-based ones in ``scoring``."""
from mixdpo_kit.margins import scoring, sources  # noqa: F401  (each module registers its own sources)
