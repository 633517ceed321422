"""Recommender plugins. Entries are lazy: importing this module imports no torch."""

METHODS: dict[str, str] = {
    "pop": "methods.pop:PopularityMethod",
    "sasrec": "methods.recbole_models:SASRecMethod",
    "gru4rec": "methods.recbole_models:GRU4RecMethod",
    "sasrec_native": "methods.sasrec_native.method:NativeSASRecMethod",
    "cove": "methods.cove.method:CoVEMethod",
    "bigrec": "methods.bigrec.method:BIGRecMethod",
    "tiger": "methods.tiger.method:TigerMethod",
}
