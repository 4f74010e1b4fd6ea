"""The Geant4 application: one run manager per process, a slab calorimeter, a step recorder.

Import this module only in a worker process, after :func:`calofm.simulate.g4env.configure`:
a Geant4 fatal error aborts the whole process and cannot be caught in Python.
"""

from __future__ import annotations

import geant4_pybind as g4
import numpy as np

from calofm.core.particles import PARTICLES
from calofm.simulate.detectors import Detector, Frame
from calofm.simulate.gun import START_MM, direction
from calofm.simulate.handoff import Trigger
from calofm.simulate.physics import CHARGED, NEUTRAL, PHOTON, Physics, birks_tables, birks_visible


class StepRecorder(g4.G4VSensitiveDetector):
    """Records [x, y, z, E] (mm, MeV) at the midpoint of every step that deposits energy.

    Positions are in calofm's frame: a GDML detector's ``frame`` turns the file's coordinates into it.
    With Birks' constant ``kb`` > 0 (mm/MeV), E is the visible energy of a scintillator: each step
    also records its length, non-ionising deposit and particle kind, and :meth:`event_rows`
    quenches the whole event at once in numpy (``birks_visible``) rather than per step in Python.
    """

    def __init__(self, name: str, kb: float = 0.0, frame: Frame | None = None):
        super().__init__(name)
        self.kb, self.frame = kb, frame
        self.rows: list[tuple] = []
        self.ranges = None  # (log E grid, log proton range, log electron range, mass ratio, charge^2)

    def ProcessHits(self, step, history):
        e = step.GetTotalEnergyDeposit()
        if e > 0:
            a, b = step.GetPreStepPoint().GetPosition(), step.GetPostStepPoint().GetPosition()
            if self.kb:
                definition = step.GetTrack().GetDefinition()
                kind = PHOTON if definition.GetPDGEncoding() == 22 else (
                    CHARGED if definition.GetPDGCharge() != 0 else NEUTRAL)
                self.rows.append((0.5 * (a.x + b.x), 0.5 * (a.y + b.y), 0.5 * (a.z + b.z), e,
                                  step.GetStepLength(), step.GetNonIonizingEnergyDeposit(), kind))
            else:
                self.rows.append((0.5 * (a.x + b.x), 0.5 * (a.y + b.y), 0.5 * (a.z + b.z), e))
        return True

    def prepare(self, material_name: str) -> None:
        """Tabulate the proton and electron ranges in the material (after the physics tables exist)."""
        if not self.kb:
            return
        calc = g4.G4EmCalculator()
        energies = np.geomspace(1e-6, 1e4, 201)
        proton = [calc.GetRange(e, "proton", material_name, "DefaultRegionForTheWorld") for e in energies]
        electron = [calc.GetRange(e, "e-", material_name, "DefaultRegionForTheWorld") for e in energies]
        del calc
        mat = g4.G4Material.GetMaterial(material_name)
        z = np.array([mat.GetElement(i).GetZ() for i in range(mat.GetNumberOfElements())])
        atoms = np.array(mat.GetVecNbOfAtomsPerVolume())[:len(z)]
        amu = np.array([g4.G4NistManager.Instance().GetAtomicMassAmu(int(round(v))) for v in z])
        self.ranges = birks_tables(energies, np.array(proton), np.array(electron), z, atoms, amu)

    def event_rows(self) -> np.ndarray:
        rows = np.array(self.rows, dtype=np.float64).reshape(-1, 7 if self.kb else 4)
        if self.kb:
            rows[:, 3] = birks_visible(rows[:, 3], rows[:, 4], rows[:, 5], rows[:, 6], self.kb, self.ranges)
            rows = rows[:, :4]
        if self.frame:
            rows[:, :3] = self.frame.to_calofm(rows[:, :3])
        return rows.astype(np.float32)


class SlabCalorimeter(g4.G4VUserDetectorConstruction):
    """The detector's slabs stacked along z, front face at z = 0, in vacuum.

    Each active material gets its own recorder, quenched by its Birks constant. With
    ``calorimeter_region``, the slabs form a region of their own (with the world's production
    cuts), so that a stepping action of the world region runs outside the calorimeter only.
    """

    def __init__(self, detector: Detector, recorders: dict[str, StepRecorder], calorimeter_region: bool = False):
        super().__init__()
        self.detector, self.recorders = detector, recorders
        self.region = g4.G4Region("calofm_calorimeter") if calorimeter_region else None
        self._keep: list = []  # Geant4 objects must outlive the run manager
        self.active: list = []  # (logical volume, material) of the volumes that record
        self.world_name = "world"

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
                    self.active.append((lv, slab.material))
                if self.region is not None:
                    self.region.AddRootLogicalVolume(lv)
            centre = g4.G4ThreeVector(0, 0, (edges[i] + edges[i + 1]) / 2)
            self._keep.append(g4.G4PVPlacement(None, centre, volumes[key], f"slab{i}", world_lv, False, i))
        return world

    def ConstructSDandField(self):
        for recorder in self.recorders.values():
            g4.G4SDManager.GetSDMpointer().AddNewDetector(recorder)
        for lv, name in self.active:
            self.SetSensitiveDetector(lv, self.recorders[name])


class GdmlCalorimeter(SlabCalorimeter):
    """The detector's GDML file, read by Geant4 (validation off): its active volumes (SensDet, or
    named in the sidecar) record, each with its material's recorder; the world's daughters form the
    calorimeter region. A section alone keeps only the volumes within its depth
    (:func:`calofm.simulate.gdml.keep_within`)."""

    def Construct(self):
        from calofm.simulate.gdml import keep_within, logical_volumes

        gdml = self.detector.gdml
        self.parser = g4.G4GDMLParser()
        self.parser.Read(gdml.path, False)
        world = self.parser.GetWorldVolume()
        if gdml.alone:
            keep_within(world.GetLogicalVolume(), gdml.frame, gdml.depth_mm)
        self.active += [(lv, lv.GetMaterial().GetName()) for lv, _ in logical_volumes(self.parser)
                        if lv.GetName() in gdml.active_volumes]
        if self.region is not None:
            world_lv = world.GetLogicalVolume()
            for lv in {world_lv.GetDaughter(i).GetLogicalVolume().GetName(): world_lv.GetDaughter(i).GetLogicalVolume()
                       for i in range(world_lv.GetNoDaughters())}.values():
                self.region.AddRootLogicalVolume(lv)
        self.world_name = world.GetName()
        return world


class PhysicsList(g4.G4VModularPhysicsList):
    """The modular constructors of :meth:`Physics.constructors`."""

    def __init__(self, constructors: tuple[str, ...]):
        super().__init__()
        self._constructors = [getattr(g4, name)() for name in constructors]
        for constructor in self._constructors:
            self.RegisterPhysics(constructor)


def physics_list(physics: Physics, official: bool):
    """The reference FTFP_BERT, or the modular list. The production cut is set by /run/setCut: through
    the bindings, SetDefaultCutValue on a list is lost by initialisation (Geant4's 1 mm stays)."""
    constructors = physics.constructors(official)
    return g4.FTFP_BERT() if constructors == ("FTFP_BERT",) else PhysicsList(constructors)


class Primaries(g4.G4VUserPrimaryGeneratorAction):
    """Fires the queued events: each (energy MeV, theta, Geant4 seed) reseeds the engine first."""

    def __init__(self, particle: str, frame: Frame | None = None):
        super().__init__()
        self.gun = g4.G4ParticleGun(1)
        self.gun.SetParticleDefinition(g4.G4ParticleTable.GetParticleTable().FindParticle(particle))
        self.queue: list[tuple[float, float, int]] = []
        self.frame = frame

    def GeneratePrimaries(self, event):
        energy, theta, seed = self.queue.pop(0)
        g4.HepRandom.setTheSeed(seed)
        d = direction(theta)
        start = -START_MM / d[2] * d
        if self.frame:
            d, start = self.frame.to_geant4(d, directions=True), self.frame.to_geant4(start)
        self.gun.SetParticleEnergy(energy)
        self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(*d))
        self.gun.SetParticlePosition(g4.G4ThreeVector(*start))
        self.gun.GeneratePrimaryVertex(event)


class Collector(g4.G4UserEventAction):
    """Each event's steps, and the particles it handed to the fast simulation."""

    def __init__(self, recorders: list[StepRecorder], handoffs: HandOffRecorder | None = None):
        super().__init__()
        self.recorders, self.handoff_recorder = recorders, handoffs
        self.events: list[np.ndarray] = []
        self.handoffs: list[np.ndarray] = []

    def BeginOfEventAction(self, event):
        for recorder in self.recorders:
            recorder.rows.clear()
        if self.handoff_recorder:
            self.handoff_recorder.rows.clear()

    def EndOfEventAction(self, event):
        self.events.append(np.concatenate([r.event_rows() for r in self.recorders]))
        if self.handoff_recorder:
            self.handoffs.append(np.array(self.handoff_recorder.rows, dtype=np.float64).reshape(-1, 8))


class HandOffRecorder:
    """Decides, for the two hooks below, whether a particle goes to the model (the trigger, and inside
    the calorimeter's lateral extent), and keeps [pdg, E, x, y, z, dx, dy, dz] of each that does."""

    def __init__(self, trigger: Trigger, half_width: float, frame: Frame | None = None):
        self.trigger, self.half_width, self.frame = trigger, half_width, frame
        self.rows: list[tuple] = []

    def take(self, track, energy: float, p, d) -> bool:
        pdg = track.GetDefinition().GetPDGEncoding()
        p, d = (p.x, p.y, p.z), (d.x, d.y, d.z)
        if self.frame:  # a GDML file's coordinates: in calofm's frame, as the trigger and the model take them
            p, d = tuple(self.frame.to_calofm(np.array(p))), tuple(self.frame.to_calofm(np.array(d), directions=True))
        if not (self.trigger.accepts(pdg, energy, p[2], d[2])
                and abs(p[0]) <= self.half_width and abs(p[1]) <= self.half_width):
            return False
        self.rows.append((pdg, energy, *p, *d))
        return True


class HandOffAtEntry(g4.G4UserSteppingAction):
    """The world region's stepping action: a particle whose step ends on the calorimeter's surface
    goes to the model, with its energy, position and direction there. No Python runs for the steps
    inside the calorimeter (its own region)."""

    def __init__(self, recorder: HandOffRecorder, world_name: str):
        super().__init__()
        self.recorder, self.world_name = recorder, world_name

    def UserSteppingAction(self, step):
        track = step.GetTrack()
        volume = track.GetNextVolume()
        if volume is None or volume.GetName() == self.world_name:
            return
        post = step.GetPostStepPoint()
        if self.recorder.take(track, post.GetKineticEnergy(), post.GetPosition(), post.GetMomentumDirection()):
            track.SetTrackStatus(g4.G4TrackStatus.fStopAndKill)


class HandOffAtBirth(g4.G4UserStackingAction):
    """A secondary born inside the calorimeter (a photon of a pi0 in a hadronic shower) goes to the
    model where it is born, before Geant4 tracks it."""

    def __init__(self, recorder: HandOffRecorder):
        super().__init__()
        self.recorder, self.e_min = recorder, recorder.trigger.e_min
        self.urgent, self.kill = g4.G4ClassificationOfNewTrack.fUrgent, g4.G4ClassificationOfNewTrack.fKill

    def ClassifyNewTrack(self, track):
        energy = track.GetKineticEnergy()  # most tracks stop at this test: keep the Python per track short
        if energy >= self.e_min and track.GetParentID() > 0 and self.recorder.take(
                track, energy, track.GetPosition(), track.GetMomentumDirection()):
            return self.kill
        return self.urgent


class KillSecondaries(g4.G4UserStackingAction):
    def ClassifyNewTrack(self, track):
        if track.GetParentID() == 0:
            return g4.G4ClassificationOfNewTrack.fUrgent
        return g4.G4ClassificationOfNewTrack.fKill


class PrimaryEnd(g4.G4UserTrackingAction):
    """Where and by which process each event's primary ended: (z mm, process name)."""

    def __init__(self):
        super().__init__()
        self.ends: list[tuple[float, str]] = []

    def PostUserTrackingAction(self, track):
        if track.GetTrackID() == 1:
            process = track.GetStep().GetPostStepPoint().GetProcessDefinedStep()
            self.ends.append((track.GetPosition().z, process.GetProcessName() if process else ""))


class Session:
    """A configured Geant4 run manager for one detector, particle and physics, in this process.

    With a ``trigger``, the particles it accepts are killed where they enter the calorimeter or are
    born in it, and recorded per event in ``collector.handoffs`` for a fast-simulation model.
    """

    def __init__(self, detector: Detector, particle: str, physics: Physics, official: bool = False,
                 trigger: Trigger | None = None):
        if particle not in PARTICLES:
            raise ValueError(f"unknown particle {particle!r}")
        ui = g4.G4UImanager.GetUIpointer()
        g4.G4EmParameters.Instance().SetVerbose(0)
        g4.G4HadronicParameters.Instance().SetVerboseLevel(0)
        self.run_manager = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.SerialOnly)
        frame = detector.gdml.frame if detector.gdml and not detector.gdml.frame.identity else None
        self.recorders = {name: StepRecorder(f"calofm_{name}", physics.birks(name), frame)
                          for name in detector.active_materials}
        construction = GdmlCalorimeter if detector.gdml else SlabCalorimeter
        self.construction = construction(detector, self.recorders, calorimeter_region=trigger is not None)
        self.physics = physics_list(physics, official)
        self.run_manager.SetUserInitialization(self.construction)
        self.run_manager.SetUserInitialization(self.physics)
        self.primaries = Primaries(particle, frame)  # user actions only after the physics list
        handoffs = HandOffRecorder(trigger, detector.lateral_mm / 2, frame) if trigger else None
        self.collector = Collector(list(self.recorders.values()), handoffs)
        self.run_manager.SetUserAction(self.primaries)
        self.run_manager.SetUserAction(self.collector)
        if handoffs:
            self._at_birth = HandOffAtBirth(handoffs)
            self.run_manager.SetUserAction(self._at_birth)
        for command in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0",
                        "/process/had/verbose 0", "/process/em/verbose 0", f"/run/setCut {physics.range_cut_mm} mm"):
            ui.ApplyCommand(command)
        self.run_manager.Initialize()
        if handoffs:  # after Initialize: the geometry, and so the world's name, exists now
            self._at_entry = HandOffAtEntry(handoffs, self.construction.world_name)
            world = g4.G4RegionStore.GetInstance().GetRegion("DefaultRegionForTheWorld", False)
            world.SetRegionalSteppingAction(self._at_entry)
        self.run_manager.BeamOn(0)  # build the physics tables now, not inside the first timed events
        built = {name for _, name in self.construction.active}  # a GDML section alone has some of them
        self.recorders = {name: recorder for name, recorder in self.recorders.items() if name in built}
        self.collector.recorders = list(self.recorders.values())
        for name, recorder in self.recorders.items():
            recorder.prepare(name)

    def simulate(self, events: list[tuple[float, float, int]]) -> list[np.ndarray]:
        """Steps [x, y, z, E] (detector frame, mm, MeV) of each (energy MeV, theta, seed) event; with a
        trigger, the particles each event handed off are in ``collector.handoffs``."""
        self.primaries.queue = list(events)
        self.collector.events, self.collector.handoffs = [], []
        self.run_manager.BeamOn(len(events))
        return self.collector.events

    def primary_ends(self, events: list[tuple[float, float, int]]) -> list[tuple[float, str]]:
        """(z mm, process) where each event's primary ended, its secondaries killed at birth.

        Switches this session to primaries only for good: its showers would be empty afterwards.
        """
        if not hasattr(self, "_ends"):
            self._ends, self._kill = PrimaryEnd(), KillSecondaries()
            self.run_manager.SetUserAction(self._ends)
            self.run_manager.SetUserAction(self._kill)
        self._ends.ends = []
        self.primaries.queue = list(events)
        self.run_manager.BeamOn(len(events))
        return self._ends.ends
