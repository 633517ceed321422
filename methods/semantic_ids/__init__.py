"""Semantic IDs shared by the generative-retrieval methods (TIGER, LC-Rec): an RQ-VAE (or RQ-KMeans) over
item text embeddings, a collision digit, the cache that lets every method reuse one catalogue's IDs, and the
catalogue trie that keeps their beam search inside the catalogue."""
