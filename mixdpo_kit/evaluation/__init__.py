"""After training: held-out preference metrics and generations (``evaluate``), answers to prompt
sets and their exports (``generation``) and a local reward-model judge (``judge``)."""
