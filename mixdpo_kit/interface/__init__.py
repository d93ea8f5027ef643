"""Where a person drives the kit: the notebooks' ipywidgets panels (``widgets``) and setup cell
(``notebook``), and the ``mixdpo-kit`` console script (``cli``)."""
