"""The Geant4 application: one run manager per process, a slab calorimeter, a step recorder.

Import this module only in a worker process, after :func:`calofm.simulate.g4env.configure`:
a Geant4 fatal error aborts the whole process and cannot be caught in Python.
"""

from __future__ import annotations

import geant4_pybind as g4
import numpy as np

from calofm.simulate.detectors import Detector
from calofm.simulate.gun import PARTICLES, direction

PHYSICS = "G4EmStandardPhysics_option1"
START_MM = 5.0  # the gun starts this far in front of the calorimeter


class StepRecorder(g4.G4VSensitiveDetector):
    """Records [x, y, z, E] (mm, MeV) at the midpoint of every step that deposits energy."""

    def __init__(self):
        super().__init__("calofm_active")
        self.rows: list[tuple[float, float, float, float]] = []

    def ProcessHits(self, step, history):
        e = step.GetTotalEnergyDeposit()
        if e > 0:
            a, b = step.GetPreStepPoint().GetPosition(), step.GetPostStepPoint().GetPosition()
            self.rows.append((0.5 * (a.x + b.x), 0.5 * (a.y + b.y), 0.5 * (a.z + b.z), e))
        return True


class SlabCalorimeter(g4.G4VUserDetectorConstruction):
    """The detector's slabs stacked along z, front face at z = 0, in vacuum."""

    def __init__(self, detector: Detector, recorder: StepRecorder):
        super().__init__()
        self.detector, self.recorder = detector, recorder
        self._keep: list = []  # Geant4 objects must outlive the run manager
        self._active: list = []

    def Construct(self):
        nist = g4.G4NistManager.Instance()
        half = self.detector.lateral_mm / 2
        depth = self.detector.depth_mm
        world_box = g4.G4Box("world", half + 10, half + 10, depth + 50)
        world_lv = g4.G4LogicalVolume(world_box, nist.FindOrBuildMaterial("G4_Galactic"), "world")
        world = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_lv, "world", None, False, 0)
        self._keep += [world_box, world_lv, world]
        volumes = {}
        edges = self.detector.slab_edges
        for i, slab in enumerate(self.detector.slabs):
            key = (slab.material, slab.thickness, slab.active)
            if key not in volumes:
                box = g4.G4Box(f"slab{i}", half, half, slab.thickness / 2)
                lv = g4.G4LogicalVolume(box, nist.FindOrBuildMaterial(slab.material), f"slab{i}")
                volumes[key] = lv
                self._keep += [box, lv]
                if slab.active:
                    self._active.append(lv)
            centre = g4.G4ThreeVector(0, 0, (edges[i] + edges[i + 1]) / 2)
            self._keep.append(g4.G4PVPlacement(None, centre, volumes[key], f"slab{i}", world_lv, False, i))
        return world

    def ConstructSDandField(self):
        g4.G4SDManager.GetSDMpointer().AddNewDetector(self.recorder)
        for lv in self._active:
            self.SetSensitiveDetector(lv, self.recorder)


class Physics(g4.G4VModularPhysicsList):
    def __init__(self, range_cut_mm: float):
        super().__init__()
        self.SetDefaultCutValue(range_cut_mm)
        self.RegisterPhysics(getattr(g4, PHYSICS)())


class Primaries(g4.G4VUserPrimaryGeneratorAction):
    """Fires the queued events: each (energy MeV, theta, Geant4 seed) reseeds the engine first."""

    def __init__(self, particle: str):
        super().__init__()
        self.gun = g4.G4ParticleGun(1)
        self.gun.SetParticleDefinition(g4.G4ParticleTable.GetParticleTable().FindParticle(particle))
        self.queue: list[tuple[float, float, int]] = []

    def GeneratePrimaries(self, event):
        energy, theta, seed = self.queue.pop(0)
        g4.HepRandom.setTheSeed(seed)
        d = direction(theta)
        start = -START_MM / d[2] * d
        self.gun.SetParticleEnergy(energy)
        self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(*d))
        self.gun.SetParticlePosition(g4.G4ThreeVector(*start))
        self.gun.GeneratePrimaryVertex(event)


class Collector(g4.G4UserEventAction):
    def __init__(self, recorder: StepRecorder):
        super().__init__()
        self.recorder = recorder
        self.events: list[np.ndarray] = []

    def BeginOfEventAction(self, event):
        self.recorder.rows.clear()

    def EndOfEventAction(self, event):
        self.events.append(np.array(self.recorder.rows, dtype=np.float32).reshape(-1, 4))


class Session:
    """A configured Geant4 run manager for one detector and particle, in this process."""

    def __init__(self, detector: Detector, particle: str, range_cut_mm: float = 0.7):
        if particle not in PARTICLES:
            raise ValueError(f"unknown particle {particle!r}")
        ui = g4.G4UImanager.GetUIpointer()
        g4.G4EmParameters.Instance().SetVerbose(0)
        self.run_manager = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.SerialOnly)
        self.recorder = StepRecorder()
        self.construction = SlabCalorimeter(detector, self.recorder)
        self.physics = Physics(range_cut_mm)
        self.run_manager.SetUserInitialization(self.construction)
        self.run_manager.SetUserInitialization(self.physics)
        self.primaries = Primaries(particle)  # user actions only after the physics list
        self.collector = Collector(self.recorder)
        self.run_manager.SetUserAction(self.primaries)
        self.run_manager.SetUserAction(self.collector)
        for command in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0"):
            ui.ApplyCommand(command)
        self.run_manager.Initialize()
        self.run_manager.BeamOn(0)  # build the physics tables now, not inside the first timed events

    def simulate(self, events: list[tuple[float, float, int]]) -> list[np.ndarray]:
        """Steps [x, y, z, E] (detector frame, mm, MeV) of each (energy MeV, theta, seed) event."""
        self.primaries.queue = list(events)
        self.collector.events = []
        self.run_manager.BeamOn(len(events))
        return self.collector.events
