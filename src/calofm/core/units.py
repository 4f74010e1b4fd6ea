"""Units. Inside calofm energies are MeV and lengths mm; convert only at file boundaries."""

MeV = 1.0
GeV = 1000.0 * MeV
keV = 1e-3 * MeV
mm = 1.0
