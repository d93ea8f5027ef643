"""What every stage uses: the run configuration (``config``), one way to format numbers
(``units``), the atomic on-disk JSON cache (``cache``) and quiet progress (``progress``)."""
