"""Detectors as GDML: a preset written out, and a GDML file read safely.

:func:`write_gdml` writes a detector's slabs as GDML: the same world, boxes, materials (by their
Geant4 NIST names), placements and copy numbers as :class:`calofm.simulate.g4app.SlabCalorimeter`
builds, with a ``SensDet`` auxiliary on the active volumes. Lengths are written with Python's
shortest round-trip representation, so Geant4 reads back the very same numbers. Written in another
:class:`~calofm.simulate.detectors.Frame`, the slabs are turned and moved as an experiment's
geometry would place them.

:func:`read_gdml` reads a GDML file with Geant4's parser, schema validation off (with it on,
Geant4 tries to reach the network and aborts the process). It runs in a child process: Geant4
ends a process on a fatal exception (an unknown material, a missing reference), which Python
cannot catch; the child's death becomes a one-line error naming the file and Geant4's reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from calofm.core.errors import InputError
from calofm.core.files import atomic_path
from calofm.simulate.detectors import Detector, Frame, Gdml
from calofm.simulate.gun import START_MM

SENSITIVE = "SensDet"  # the GDML auxiliary type that marks an active volume


def _slab_volumes(detector: Detector) -> tuple[dict[tuple, str], list[tuple[str, float]]]:
    """The logical volumes of the slabs (one per (material, thickness, active), named after the first
    slab that uses it) and each slab's (volume, centre depth in mm), as SlabCalorimeter builds them."""
    volumes, placements = {}, []
    edges = detector.slab_edges
    for i, slab in enumerate(detector.slabs):
        key = (slab.material, slab.thickness, slab.active)
        volumes.setdefault(key, f"slab{i}")
        placements.append((volumes[key], (edges[i] + edges[i + 1]) / 2))
    return volumes, placements


def write_gdml(detector: Detector, path: str | Path, frame: Frame = Frame()) -> Path:
    """Write ``detector``'s geometry as GDML (see the module docstring); returns the path. With a
    ``frame``, the slabs lie in an envelope volume (vacuum, the slabs' extent) turned by the frame's
    rotation and moved to its front point, as an experiment's geometry would place them."""
    half, depth = detector.lateral_mm / 2, detector.depth_mm
    volumes, placements = _slab_volumes(detector)
    root = ET.Element("gdml")
    define = ET.SubElement(root, "define")
    ET.SubElement(root, "materials")
    solids, structure = ET.SubElement(root, "solids"), ET.SubElement(root, "structure")
    full = repr(2 * half)
    if frame.identity:  # the world SlabCalorimeter builds
        world_half = (half + 10, half + 10, depth + 50)
    else:  # around the origin, holding the calorimeter's corners and the gun
        corners = frame.to_geant4(np.array([(x, y, z) for x in (-half, half) for y in (-half, half)
                                            for z in (-START_MM, depth)]))
        world_half = tuple(np.abs(corners).max(0) + 50)
    ET.SubElement(solids, "box", name="world", lunit="mm", **{k: repr(2 * float(h)) for k, h in zip("xyz", world_half)})
    for (material, thickness, active), name in volumes.items():
        ET.SubElement(solids, "box", name=name, x=full, y=full, z=repr(thickness), lunit="mm")
        volume = _volume(structure, name, material)
        if active:
            ET.SubElement(volume, "auxiliary", auxtype=SENSITIVE, auxvalue=material)
    mother, shift = "world", 0.0
    if not frame.identity:
        mother, shift = "calorimeter", -depth / 2
        ET.SubElement(solids, "box", name=mother, x=full, y=full, z=repr(depth), lunit="mm")
    volume = _volume(structure, mother, "G4_Galactic")
    for i, (name, z) in enumerate(placements):
        physvol = ET.SubElement(volume, "physvol", name=f"slab{i}", copynumber=str(i))
        ET.SubElement(physvol, "volumeref", ref=name)
        ET.SubElement(physvol, "position", name=f"slab{i}_position", x="0", y="0", z=repr(float(z + shift)),
                      unit="mm")
    if not frame.identity:
        ET.SubElement(define, "rotation", name="turn", unit="deg",
                      **dict(zip("xyz", (repr(float(a)) for a in _gdml_angles(frame.rotation)))))
        physvol = ET.SubElement(_volume(structure, "world", "G4_Galactic"), "physvol", name=mother)
        ET.SubElement(physvol, "volumeref", ref=mother)
        centre = frame.to_geant4(np.array([0.0, 0.0, depth / 2]))
        ET.SubElement(physvol, "position", name=f"{mother}_position", unit="mm",
                      **dict(zip("xyz", (repr(float(v)) for v in centre))))
        ET.SubElement(physvol, "rotationref", ref="turn")
    setup = ET.SubElement(root, "setup", name="Default", version="1.0")
    ET.SubElement(setup, "world", ref="world")
    ET.indent(root)
    path = Path(path)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=True)
    return path


def _volume(structure: ET.Element, name: str, material: str) -> ET.Element:
    """A GDML logical volume of ``material`` whose solid has its name."""
    volume = ET.SubElement(structure, "volume", name=name)
    ET.SubElement(volume, "materialref", ref=material)
    ET.SubElement(volume, "solidref", ref=name)
    return volume


def _gdml_angles(rotation: np.ndarray) -> np.ndarray:
    """The angles (x, y, z) in degrees of a GDML <rotation> that turns a placed volume by ``rotation``:
    Geant4 builds Rz(z) Ry(y) Rx(x) and places the volume with its inverse, Rx(-x) Ry(-y) Rz(-z)."""
    m = rotation
    a, b, c = np.arctan2(-m[1, 2], m[2, 2]), np.arcsin(np.clip(m[0, 2], -1, 1)), np.arctan2(-m[0, 1], m[0, 0])
    return -np.degrees([a, b, c])


def write_sidecar(detector: Detector, gdml: Path, path: str | Path, frame: Frame = Frame()) -> Path:
    """Write the detector YAML that names ``gdml`` as ``detector``'s geometry, with its name, mesh and
    sampling fraction (each section's, with its depth) and the ``frame`` it was written in: simulating
    it gives the preset's showers, bit for bit in calofm's own frame."""
    import yaml

    d = {"name": detector.name, "description": f"{detector.description.strip()} Geometry: {gdml.name}.",
         "gdml": gdml.name}
    if not frame.identity:
        d["frame"] = {k: list(v) for k, v in asdict(frame).items()}
    if detector.sections:
        d["sections"] = [{"name": section.name, "depth_mm": end - start,
                          "mesh": {k: v for k, v in asdict(section.mesh).items() if k != "dz"},
                          "sampling_fraction": section.sampling_fraction}
                         for section, (start, end) in zip(detector.sections, detector.section_ranges)]
    else:
        d.update(mesh=asdict(detector.mesh), sampling_fraction=detector.sampling_fraction)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@dataclass(frozen=True)
class GdmlGeometry:
    """What calofm reads from a GDML file: its world, volumes, active volumes and extent, in the
    file's coordinates."""

    path: str
    sha256: str
    world: str
    volumes: dict[str, str]              # logical volume -> material
    sensitive: tuple[str, ...]            # logical volumes carrying a SensDet auxiliary
    placements: int                       # volumes placed directly in the world
    world_mm: tuple[tuple[float, float], ...]  # (low, high) in x, y, z of the world's bounding box
    corners_mm: tuple[tuple[float, float, float], ...]  # of the bounding boxes of what the world holds, as placed

    def active_volumes(self, patterns: list[str], source: str) -> tuple[str, ...]:
        """The logical volumes that record: those the sidecar's ``active`` patterns (shell-style, such
        as ``*Scint*``) name, or without patterns those carrying a SensDet auxiliary."""
        if not patterns:
            if not self.sensitive:
                raise InputError(self.path, f"no volume carries a {SENSITIVE} auxiliary: calofm would score nothing "
                                            f"(mark the active layers with <auxiliary auxtype=\"{SENSITIVE}\" "
                                            "auxvalue=\"...\"/>, or name them in the sidecar's active list)")
            return self.sensitive
        for pattern in patterns:
            if not fnmatch.filter(self.volumes, pattern):
                names = sorted(self.volumes)
                raise InputError(source, f"active: {pattern!r} names no volume of {Path(self.path).name}; its volumes: "
                                         f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}")
        return tuple(sorted(v for v in self.volumes if any(fnmatch.fnmatchcase(v, p) for p in patterns)))

    def bounds(self, frame: Frame) -> np.ndarray:
        """(low, high) in calofm's x, y, z of the calorimeter (what the world holds) seen in ``frame``."""
        points = frame.to_calofm(np.array(self.corners_mm))
        return np.stack([points.min(0), points.max(0)], axis=1)

    def extent(self, frame: Frame) -> tuple[float, float]:
        """(half width, depth) in mm of the calorimeter seen in ``frame``: its farthest reach across the
        normal, and behind the front face."""
        (x0, x1), (y0, y1), (_, depth) = self.bounds(frame)
        return float(max(-x0, x1, -y0, y1)), float(depth)

    def front_centre(self, normal: np.ndarray, beam: np.ndarray) -> np.ndarray:
        """The centre of the calorimeter's front face, seen along ``normal``: the default frame.front_mm."""
        frame = Frame((0.0, 0.0, 0.0), tuple(normal), tuple(beam))
        (x0, x1), (y0, y1), (z0, _) = self.bounds(frame)
        return frame.to_geant4(np.array([(x0 + x1) / 2, (y0 + y1) / 2, z0]))

    def check(self, frame: Frame) -> None:
        """Refuse a frame whose front point is off the calorimeter's front face, or a world that does not
        hold the calorimeter and the gun."""
        front = self.bounds(frame)[2, 0]
        if abs(front) > 1e-6:
            raise InputError(self.path, f"the calorimeter's front face is {front:g} mm from frame.front_mm "
                                        f"{list(frame.front_mm)} along the normal {list(frame.normal)}: particles "
                                        "aim at front_mm, so put it on the front face (or leave it out)")
        gun = frame.to_geant4(np.array([0.0, 0.0, -START_MM]))
        world = np.array(self.world_mm)
        inside = np.all((np.vstack([self.corners_mm, gun]) >= world[:, 0] - 1e-6)
                        & (np.vstack([self.corners_mm, gun]) <= world[:, 1] + 1e-6))
        if not inside:
            raise InputError(self.path, f"the world ({world.tolist()} mm) must hold the calorimeter and the gun "
                                        f"{START_MM:g} mm in front of it (at {np.round(gun, 6).tolist()} mm)")

    def describe(self, gdml: Gdml) -> dict:
        """What calofm found in the file, read as the detector ``gdml`` (its frame, its active volumes)."""
        half_width, depth = self.extent(gdml.frame)
        return {"gdml": self.path, "sha256": self.sha256, "world": self.world, "volumes": len(self.volumes),
                "placements": self.placements, "sensdet_volumes": list(self.sensitive),
                "active_volumes": list(gdml.active_volumes), "materials": sorted(set(self.volumes.values())),
                "frame": asdict(gdml.frame),
                "depth_mm": depth, "half_width_mm": half_width}


def read_gdml(path: str | Path) -> GdmlGeometry:
    """Read ``path`` with Geant4 (validation off) in a child process; a one-line :class:`InputError`
    names the file and the problem: missing, not XML, not GDML, an unknown material or reference,
    an empty world."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such GDML file" if not path.exists() else "is not a file")
    data = path.read_bytes()
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(path, f"is not well-formed XML ({exc})") from None
    if root.tag.rsplit("}", 1)[-1] != "gdml":
        raise InputError(path, f"is XML but not GDML (its root element is <{root.tag}>)")
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "geometry.json", Path(tmp) / "geant4.log"
        with log.open("w") as sink:
            done = subprocess.run([sys.executable, "-m", "calofm.simulate.gdml", str(path.resolve()), str(out)],
                                  stdout=sink, stderr=subprocess.STDOUT)
        if done.returncode or not out.exists():
            from calofm.simulate.g4env import last_exception

            raise InputError(path, f"Geant4 cannot build it: {last_exception(log)}")
        read = json.loads(out.read_text())
    if not read["corners_mm"]:
        raise InputError(path, "its world holds no volume: there is no calorimeter")
    geometry = GdmlGeometry(str(path), hashlib.sha256(data).hexdigest(), read["world"], read["volumes"],
                            tuple(read["sensitive"]), read["placements"], tuple(map(tuple, read["world_mm"])),
                            tuple(map(tuple, read["corners_mm"])))
    return geometry


def logical_volumes(parser) -> list[tuple]:
    """(logical volume, carries a SensDet auxiliary) of every volume in the world tree that a
    ``G4GDMLParser`` has read, each once."""
    found, seen = [], set()
    stack = [parser.GetWorldVolume().GetLogicalVolume()]
    while stack:
        lv = stack.pop()
        if lv.GetName() in seen:
            continue
        seen.add(lv.GetName())
        found.append((lv, any(aux.type == SENSITIVE for aux in parser.GetVolumeAuxiliaryInformation(lv))))
        stack += [lv.GetDaughter(i).GetLogicalVolume() for i in range(lv.GetNoDaughters())]
    return found


def placement(pv) -> tuple[np.ndarray, np.ndarray]:
    """(rotation, translation) that take a placed volume's coordinates into its mother's."""
    r, t = pv.GetObjectRotationValue(), pv.GetObjectTranslation()
    return np.array([[r.xx, r.xy, r.xz], [r.yx, r.yy, r.yz], [r.zx, r.zy, r.zz]]), np.array([t.x, t.y, t.z])


def placed_corners(pv) -> np.ndarray:
    """The 8 corners of a placed volume's bounding box in its mother's frame, rotation included (in a
    process where Geant4 is configured)."""
    import geant4_pybind as g4

    low, high = g4.G4ThreeVector(), g4.G4ThreeVector()
    pv.GetLogicalVolume().GetSolid().BoundingLimits(low, high)
    rotation, translation = placement(pv)
    box = np.array([(x, y, z) for x in (low.x, high.x) for y in (low.y, high.y) for z in (low.z, high.z)])
    return box @ rotation.T + translation


def keep_within(lv, frame: Frame, depth: float, to_file=(np.eye(3), np.zeros(3))) -> None:
    """Remove from the logical volume ``lv`` (its coordinates taken into the file's by ``to_file``) the
    volumes that lie wholly outside the depth range [0, ``depth``] of ``frame``; descend into those
    that straddle it (an envelope holding several sections). A straddling volume without daughters
    stays whole."""
    rotation, shift = to_file
    for pv in [lv.GetDaughter(i) for i in range(lv.GetNoDaughters())]:
        z = frame.to_calofm(placed_corners(pv) @ rotation.T + shift)[:, 2]
        if z.min() >= -1e-6 and z.max() <= depth + 1e-6:
            continue
        if z.max() <= 1e-6 or z.min() >= depth - 1e-6:
            lv.RemoveDaughter(pv)
        else:
            r, t = placement(pv)
            keep_within(pv.GetLogicalVolume(), frame, depth, (rotation @ r, rotation @ t + shift))


def _read_in_this_process(path: str, out: str) -> None:
    """The child process of :func:`read_gdml`: parse with Geant4 and write what it found as JSON."""
    from calofm.simulate import g4env

    g4env.configure(False)
    import geant4_pybind as g4

    parser = g4.G4GDMLParser()
    parser.Read(path, False)  # validation off: with it on, Geant4 reaches for the network and aborts
    world = parser.GetWorldVolume()
    found = logical_volumes(parser)
    volumes = {lv.GetName(): lv.GetMaterial().GetName() for lv, _ in found}
    sensitive = [lv.GetName() for lv, active in found if active]

    world_lv = world.GetLogicalVolume()
    low, high = g4.G4ThreeVector(), g4.G4ThreeVector()
    world_lv.GetSolid().BoundingLimits(low, high)
    found = {"world": world.GetName(), "volumes": volumes, "sensitive": sorted(sensitive),
             "placements": world_lv.GetNoDaughters(),
             "world_mm": [[low.x, high.x], [low.y, high.y], [low.z, high.z]],
             "corners_mm": [corner for i in range(world_lv.GetNoDaughters())
                            for corner in placed_corners(world_lv.GetDaughter(i)).tolist()]}
    Path(out).write_text(json.dumps(found))


if __name__ == "__main__":
    _read_in_this_process(*sys.argv[1:3])
