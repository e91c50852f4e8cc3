"""Models: offline preparation of the packaged weights (``prepare``), the causal-LM interface every
tier uses (``lm``), and sentence embeddings (``embed``)."""
