"""CaloChallenge-compatible evaluation: features, distances, classifier tests, FPD/KPD, reports."""
