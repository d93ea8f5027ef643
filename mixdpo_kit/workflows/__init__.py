"""Whole runs and studies: a run from config to report (``runs``), objectives × seeds comparisons
(``compare``) and the named variants they take (``variants``; importing it fills their registry)."""
