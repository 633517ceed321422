"""Recommender plugins. Entries are lazy: importing this module imports no torch."""

METHODS: dict[str, str] = {
    "pop": "methods.pop:PopularityMethod",
    "sasrec": "methods.recbole_models:SASRecMethod",
    "gru4rec": "methods.recbole_models:GRU4RecMethod",
    "sasrec_native": "methods.sasrec_native.method:NativeSASRecMethod",
    "cove": "methods.cove.method:CoVEMethod",
    "bigrec": "methods.bigrec.method:BIGRecMethod",
    "tiger": "methods.tiger.method:TigerMethod",
    "lcrec": "methods.lcrec.method:LCRecMethod",
}

# The ID baselines `bench baselines` trains, cheapest first: what a new method is compared against.
BASELINES: tuple[str, ...] = ("pop", "sasrec_native", "gru4rec", "sasrec")

# The one setting a method's rows are compared over: the leaderboard's "swept" column and sweep plots.
SWEPT_SETTINGS: dict[str, str] = {"cove": "compression_ratio"}
