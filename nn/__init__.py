"""tucker_dlra.nn: the PyTorch adapter (Tucker convolutions trained by Algorithm 1)."""
