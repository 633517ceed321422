"""CoVE: compressed vocabulary expansion for LLM sequential recommendation (ACL 2025).

hashing.py (universal hashes) -> item_layers.py (hashed item embedding / head) ->
model.py (LM + item tables) -> prompts.py (prompt ids) -> trainer.py (fine-tuning) ->
method.py (the recbench plugin, `CoVEMethod`).
"""
