"""Semantic IDs shared by the generative-retrieval methods (TIGER, LC-Rec): an RQ-VAE over item text
embeddings, a collision digit, and the cache that lets every method reuse one catalogue's IDs."""
