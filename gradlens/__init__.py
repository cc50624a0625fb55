"""gradlens: see the autograd graph, the gradients that flow through it, and what breaks it."""
