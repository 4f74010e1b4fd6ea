"""Ground truth: Geant4 shower simulation of many detectors, offline (``calofm simulate``)."""
