"""Configuration: the options of ``init`` and ``register``, each validated where it is declared."""
