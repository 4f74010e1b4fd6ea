"""Declarative detector descriptions: a layer stack, a lateral size, a readout and a scoring mesh.

A detector is a list of *blocks*, each a sequence of slabs (material, thickness in mm, active
or not) repeated ``repeat`` times along the beam (z) axis, front face at z = 0. Energy deposited
in active slabs is scored on

- the **mesh**: the universal cylindrical representation (CaloDiT-2 / LEMURS, CaloChallenge
  datasets 2 and 3), aligned with the particle direction, energies divided by the sampling fraction;
- the **readout** (optional point clouds): the detector's own cells, refined 6 times in each
  transverse direction, one layer per active slab (CaloClouds pre-clustering).

Presets live as YAML files in ``calofm/simulate/presets``; a user adds a detector with a YAML
file of the same form (``--detector my.yaml``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from calofm.core.errors import InputError
from calofm.core.files import atomic_path, read_yaml_mapping
from calofm.geometry import CylindricalBinning, PlanarGrid, calochallenge_binning
from calofm.simulate.materials import E_S, MATERIALS, material

YAML_KEYS = ("name", "description", "layers", "gdml", "active", "frame", "mesh", "meshes", "lateral_mm", "cell_mm",
             "sampling_fraction", "sections")
SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")  # detector names become file names and labels


@dataclass(frozen=True)
class Slab:
    material: str
    thickness: float  # mm
    active: bool = False


@dataclass(frozen=True)
class Mesh:
    """Universal cylindrical scoring mesh: n_r x n_alpha x n_z bins of dr x (2 pi / n_alpha) x dz."""

    n_r: int = 9
    n_alpha: int = 16
    n_z: int = 45
    dr: float = 4.65
    dz: float = 3.4

    def __post_init__(self):
        if min(self.n_r, self.n_alpha, self.n_z) < 1 or min(self.dr, self.dz) <= 0:
            raise ValueError(f"mesh {self.n_r} x {self.n_alpha} x {self.n_z} bins of {self.dr} x {self.dz} mm: "
                             "needs at least one bin on each axis and positive bin sizes")

    def binning(self, name: str) -> CylindricalBinning:
        if (self.n_r, self.n_alpha, self.n_z, self.dr, self.dz) == (9, 16, 45, 4.65, 3.4):
            return calochallenge_binning("dataset_2")
        if (self.n_r, self.n_alpha, self.n_z, self.dr, self.dz) == (18, 50, 45, 2.325, 3.4):
            return calochallenge_binning("dataset_3")
        return CylindricalBinning.regular(self.n_r, self.n_alpha, self.n_z, self.dr, self.dz, name=f"{name}-mesh")


@dataclass(frozen=True)
class Section:
    """Consecutive blocks (of a GDML detector: a depth range) scored on their own regular mesh with
    their own sampling fraction (an ECAL followed by an HCAL): the detector's mesh is the sections'
    meshes one after the other."""

    name: str
    blocks: int
    mesh: Mesh
    sampling_fraction: float | None = None
    depth_mm: float | None = None  # a GDML detector's section: its depth along the normal (no blocks)


@dataclass(frozen=True)
class Block:
    """A sequence of slabs repeated ``repeat`` times."""

    slabs: tuple[Slab, ...]
    repeat: int = 1


@dataclass(frozen=True)
class Frame:
    """Where calofm's frame lies in a GDML file's coordinates.

    calofm simulates and scores in the presets' frame: the calorimeter's front face is the plane
    z = 0, its inward normal +z, and theta tilts particles towards +y (the beam axis, as in Par04).
    A GDML file built in its experiment's coordinates names that frame: ``front_mm``, the point of
    the front face that particles aim at (calofm's origin), ``normal``, the front face's inward
    normal (calofm's z), and ``beam``, the direction theta is measured from (calofm's y, made
    orthogonal to the normal). The gun fires at ``front_mm`` from 5 mm in front of it.
    """

    front_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    beam: tuple[float, float, float] = (0.0, 1.0, 0.0)

    @classmethod
    def parse(cls, d: dict, default_front, source: str) -> "Frame":
        """The sidecar's ``frame`` mapping; ``default_front(normal, beam)`` gives the front point when it
        leaves it out (found from the geometry)."""
        _known_keys(d, [f.name for f in fields(cls)], "frame.", source)

        def vector(key: str, default, what: str) -> np.ndarray:
            try:
                v = np.asarray(d.get(key, default), dtype=float)
            except (TypeError, ValueError):
                v = np.zeros(0)
            if v.shape != (3,) or not np.all(np.isfinite(v)) or (what != "a point" and not v.any()):
                raise InputError(source, f"frame.{key}: expected {what} [x, y, z], got {d[key]!r}")
            return v

        normal = vector("normal", (0.0, 0.0, 1.0), "a non-zero vector")
        normal /= np.linalg.norm(normal)
        beam = vector("beam", (0.0, 1.0, 0.0), "a non-zero vector")
        beam = beam / np.linalg.norm(beam) - beam.dot(normal) / np.linalg.norm(beam) * normal
        if np.linalg.norm(beam) < 1e-6:
            raise InputError(source, "frame.beam is parallel to frame.normal: give the beam axis theta is measured "
                                     "from, across the normal")
        beam /= np.linalg.norm(beam)
        front = vector("front_mm", None, "a point") if "front_mm" in d else default_front(normal, beam)
        return cls(tuple(map(float, front)), tuple(map(float, normal)), tuple(map(float, beam)))

    @cached_property
    def rotation(self) -> np.ndarray:
        """Columns: calofm's x, y, z axes in the GDML file's coordinates."""
        y, z = np.array(self.beam), np.array(self.normal)
        return np.stack([np.cross(y, z), y, z], axis=1)

    @property
    def identity(self) -> bool:
        """calofm's own frame: nothing to transform (and the presets' showers stay bit for bit)."""
        return self == Frame()

    def to_calofm(self, points: np.ndarray, directions: bool = False) -> np.ndarray:
        """Points (or directions) [..., 3] in the GDML file's coordinates, in calofm's frame."""
        return (points if directions else points - np.array(self.front_mm)) @ self.rotation

    def to_geant4(self, points: np.ndarray, directions: bool = False) -> np.ndarray:
        """Points (or directions) [..., 3] in calofm's frame, in the GDML file's coordinates."""
        moved = points @ self.rotation.T
        return moved if directions else moved + np.array(self.front_mm)


@dataclass(frozen=True)
class Gdml:
    """A detector's geometry as a GDML file: calofm builds what the file says instead of slabs, and
    simulates and scores in calofm's frame (:class:`Frame`)."""

    path: str
    sha256: str                        # of the file's content: a changed file is another detector
    active_volumes: tuple[str, ...]    # the logical volumes that record (SensDet, or the sidecar's active list)
    active_materials: tuple[str, ...]  # their materials
    depth_mm: float                    # the calorimeter's extent behind its front face
    frame: Frame = Frame()
    alone: bool = False                # build only the volumes within depth_mm of the front face (a section)


@dataclass(frozen=True)
class Detector:
    name: str
    description: str
    blocks: tuple[Block, ...]
    mesh: Mesh
    lateral_mm: float = 1000.0
    cell_mm: float | None = None  # planar readout cell size; None: the readout is the mesh itself
    sampling_fraction: float | None = None  # visible / incident for 10 GeV e-; None: measure it
    meshes: dict = field(default_factory=dict)  # alternative meshes by name (e.g. dataset_3)
    sections: tuple[Section, ...] = ()  # none: one mesh and one sampling fraction for the whole stack
    gdml: Gdml | None = None  # the geometry as a GDML file (then no blocks)

    # --- loading ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "Detector":
        """Build from the YAML form; the mesh's dz defaults to the depth over its n_z bins."""
        try:
            _known_keys(d, YAML_KEYS, "", source)
            if not SAFE_NAME.fullmatch(str(d["name"])):
                raise InputError(source, f"name {d['name']!r}: use letters, digits and . _ + - only (it names "
                                         "files and the model's detector label), not starting with a dot")
            if "gdml" in d:
                return cls._from_gdml(d, source)
            if "frame" in d or "active" in d:
                raise InputError(source, "frame and active (volumes) go with a GDML file (gdml: FILE); slabs are "
                                         "built in calofm's frame and marked active themselves")
            for i, block in enumerate(d["layers"]):
                _known_keys(block, ("repeat", "slabs"), f"layers[{i}].", source)
                for j, slab in enumerate(block["slabs"]):
                    _known_keys(slab, ("material", "thickness", "active"), f"layers[{i}].slabs[{j}].", source)
            blocks = tuple(Block(tuple(Slab(s["material"], float(s["thickness"]), bool(s.get("active", False)))
                                       for s in block["slabs"]), int(block.get("repeat", 1))) for block in d["layers"])
            det = cls(name=str(d["name"]), description=str(d.get("description", "")), blocks=blocks, mesh=Mesh(),
                      lateral_mm=float(d.get("lateral_mm", 1000.0)),
                      cell_mm=None if d.get("cell_mm") is None else float(d["cell_mm"]),
                      sampling_fraction=None if d.get("sampling_fraction") is None else float(d["sampling_fraction"]),
                      meshes={k: _mesh(v, f"meshes.{k}.", source) for k, v in d.get("meshes", {}).items()})
            unknown = sorted({s.material for s in det.slabs} - set(MATERIALS))
            if unknown:
                raise InputError(source, f"unknown material(s) {', '.join(unknown)}; known: {', '.join(MATERIALS)}")
            if not any(s.active for s in det.slabs):
                raise InputError(source, "no active slab: nothing would be scored")
            if any(s.thickness <= 0 for s in det.slabs) or any(b.repeat < 1 for b in det.blocks):
                raise InputError(source, "slab thicknesses (mm) and block repeats must be positive")
            if det.lateral_mm <= 0 or (det.cell_mm is not None and det.cell_mm <= 0):
                raise InputError(source, "lateral_mm and cell_mm must be positive (mm)")
            return _scored(det, d, source)
        except KeyError as exc:
            raise InputError(source, f"not a valid detector description (missing key {exc})") from None
        except (TypeError, ValueError) as exc:
            raise InputError(source, f"not a valid detector description ({exc})") from None

    @classmethod
    def _from_gdml(cls, d: dict, source: str) -> "Detector":
        """A detector whose geometry is the GDML file ``d['gdml']`` (relative to the YAML's folder)."""
        from calofm.simulate.gdml import read_gdml

        if "layers" in d:
            raise InputError(source, "gives both gdml and layers: the GDML file is the geometry")
        path = Path(d["gdml"])
        if not path.is_absolute() and Path(source).is_file():
            path = Path(source).parent / path  # relative to the detector YAML
        geometry = read_gdml(path)
        frame = Frame.parse(d.get("frame", {}), geometry.front_centre, source)
        geometry.check(frame)
        half_width, depth = geometry.extent(frame)
        patterns = d.get("active", [])
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise InputError(source, f"active: expected a list of volume names or patterns, got {patterns!r}")
        active = geometry.active_volumes(list(patterns), source)
        gdml = Gdml(str(path), geometry.sha256, active, tuple(sorted({geometry.volumes[v] for v in active})),
                    depth, frame)
        det = cls(name=str(d["name"]), description=str(d.get("description", "")), blocks=(), mesh=Mesh(),
                  lateral_mm=2 * half_width,
                  sampling_fraction=None if d.get("sampling_fraction") is None else float(d["sampling_fraction"]),
                  gdml=gdml)
        return _scored(det, d, source)

    @classmethod
    def sandwich(cls, name: str, absorber: str, absorber_mm: float, active: str, active_mm: float, layers: int,
                 mesh: dict, sampling_fraction: float | None = None) -> "Detector":
        """``layers`` x (absorber, active) slabs, scored on ``mesh`` (n_r, n_alpha, n_z, dr; its z bins span
        the depth): the quick sampling calorimeter of physics checks."""
        return cls.from_dict({"name": name, "sampling_fraction": sampling_fraction, "mesh": mesh,
                              "layers": [{"repeat": layers, "slabs": [
                                  {"material": absorber, "thickness": absorber_mm},
                                  {"material": active, "thickness": active_mm, "active": True}]}]},
                             f"sandwich {name}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Detector":
        return cls.from_dict(read_yaml_mapping(path, "detector YAML", "name, layers, ..."), str(path))

    def with_mesh(self, name: str | None) -> "Detector":
        """This detector scored on one of its alternative meshes (e.g. ``dataset_3``)."""
        if name is None:
            return self
        if name not in self.meshes:
            raise KeyError(f"detector {self.name!r} has no mesh {name!r}; it has: {', '.join(self.meshes) or 'none'}")
        return replace(self, mesh=self.meshes[name])

    def to_dict(self) -> dict:
        """The YAML form (layers as repeated blocks)."""
        d = asdict(self)
        d["layers"] = d.pop("blocks")
        if self.gdml is None:
            d.pop("gdml")
        if self.sections:  # each section has its mesh and sampling fraction
            for key in ("mesh", "sampling_fraction", "cell_mm", "meshes"):
                d.pop(key)
            for section in d["sections"]:  # slab sections count blocks, GDML ones give their depth
                section.pop("blocks" if self.gdml else "depth_mm")
        return d

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of everything that changes the showers (not the name or description)."""
        d = self.to_dict()
        for key in ("name", "description", "meshes"):
            d.pop(key, None)
        if self.gdml:  # the file's content counts, not where it lies
            d["gdml"].pop("path")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    # --- derived properties -------------------------------------------------------
    @cached_property
    def slabs(self) -> tuple[Slab, ...]:
        """Every slab from the front face backwards."""
        return tuple(slab for block in self.blocks for slab in block.slabs * block.repeat)

    @property
    def depth_mm(self) -> float:
        return self.gdml.depth_mm if self.gdml else float(sum(s.thickness for s in self.slabs))

    @property
    def depth_x0(self) -> float:
        return float(sum(s.thickness / material(s.material).x0_mm for s in self.slabs))

    @property
    def depth_lambda(self) -> float:
        """Depth in nuclear interaction lengths."""
        return float(sum(s.thickness / material(s.material).lambda_i_mm for s in self.slabs))

    @property
    def x0_mm(self) -> float:
        """Effective radiation length of the stack: depth / depth in X0."""
        return self.depth_mm / self.depth_x0

    @property
    def moliere_mm(self) -> float:
        """Effective Moliere radius: 1/R_M = (1/E_s) sum_i f_i E_c,i / X0_i, f_i thickness fractions."""
        inv = sum(s.thickness * material(s.material).critical_mev / material(s.material).x0_mm for s in self.slabs)
        return E_S * self.depth_mm / inv

    @property
    def critical_mev(self) -> float:
        """Effective critical energy, consistent with R_M = E_s X0 / E_c."""
        return E_S * self.x0_mm / self.moliere_mm

    @property
    def active_layers(self) -> np.ndarray:
        """Indices (in ``slabs``) of the active slabs: one readout layer each."""
        return np.array([i for i, s in enumerate(self.slabs) if s.active])

    @property
    def active_materials(self) -> list[str]:
        """The materials of the active slabs (or GDML volumes), each once, sorted."""
        if self.gdml:
            return sorted(self.gdml.active_materials)
        return sorted({s.material for s in self.slabs if s.active})

    @property
    def slab_edges(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum([s.thickness for s in self.slabs])])

    def mesh_binning(self) -> CylindricalBinning:
        if not self.sections:
            return self.mesh.binning(self.name)
        layers, z_edges = [], [0.0]
        for section, (start, _) in zip(self.sections, self.section_ranges):
            part = section.mesh.binning(f"{self.name}-{section.name}")
            layers += part.layers
            z_edges += [round(start + z, 10) for z in part.z_edges[1:]]
        return CylindricalBinning(tuple(layers), tuple(z_edges), name=f"{self.name}-mesh")

    @property
    def section_ranges(self) -> list[tuple[float, float]]:
        """(start, end) depth in mm of each section."""
        if self.gdml:
            ends = np.concatenate([[0.0], np.cumsum([s.depth_mm for s in self.sections])])
            return [(float(a), float(b)) for a, b in zip(ends[:-1], ends[1:])]
        ends = np.cumsum([0] + [s.blocks for s in self.sections])
        block_depths = np.concatenate([[0.0], np.cumsum([sum(s.thickness for s in b.slabs) * b.repeat
                                                          for b in self.blocks])])
        return [(float(block_depths[a]), float(block_depths[b])) for a, b in zip(ends[:-1], ends[1:])]

    @property
    def sampling_fractions(self) -> tuple[float | None, ...]:
        """One per section (one in all for a detector without sections)."""
        return tuple(s.sampling_fraction for s in self.sections) or (self.sampling_fraction,)

    def energy_scale(self, z: np.ndarray) -> np.ndarray:
        """1 / sampling fraction of the section at each depth ``z`` (mm)."""
        inverse = 1.0 / np.array(self.sampling_fractions, dtype=float)
        if not self.sections:
            return np.full(len(z), inverse[0])
        starts = np.array([a for a, _ in self.section_ranges])
        return inverse[np.clip(np.searchsorted(starts, z, side="right") - 1, 0, len(starts) - 1)]

    def section_detector(self, i: int) -> "Detector":
        """Section ``i`` alone, on its own mesh (to measure its sampling fraction)."""
        section = self.sections[i]
        alone = replace(self, name=f"{self.name}-{section.name}", mesh=section.mesh,
                        sampling_fraction=section.sampling_fraction, sections=())
        if self.gdml:  # the volumes within the section's depth, its front face at calofm's z = 0
            start, end = self.section_ranges[i]
            frame = self.gdml.frame
            front = tuple(float(v) for v in np.array(frame.front_mm) + start * np.array(frame.normal))
            return replace(alone, gdml=replace(self.gdml, depth_mm=end - start, frame=replace(frame, front_mm=front),
                                               alone=True))
        first = sum(s.blocks for s in self.sections[:i])
        return replace(alone, blocks=self.blocks[first:first + section.blocks])

    def readout(self) -> CylindricalBinning | PlanarGrid:
        """The detector's own cells: a planar grid over the active-layer pitches, or the mesh."""
        if self.cell_mm is None:
            return self.mesh_binning()
        n = int(round(self.lateral_mm / self.cell_mm))
        edges = self.slab_edges
        active = self.active_layers
        # layer i spans from the end of the previous active slab to the end of active slab i
        z_edges = np.concatenate([[0.0], edges[active + 1]])
        return PlanarGrid(n, n, self.cell_mm, self.cell_mm, tuple(float(z) for z in np.round(z_edges, 10)),
                          name=f"{self.name}-cells")


def _scored(det: Detector, d: dict, source: str) -> Detector:
    """``det`` with its sampling fraction checked and its mesh, or its sections, from the YAML ``d``
    (the mesh's dz defaults to the depth over its n_z bins)."""
    _check_sampling_fraction(det.sampling_fraction, "", source)
    if "sections" in d:
        return replace(det, sections=_sections(det, d, source))
    mesh = dict(d.get("mesh", {}))
    mesh.setdefault("dz", round(det.depth_mm / mesh.get("n_z", 45), 4))
    return replace(det, mesh=_mesh(mesh, "mesh.", source))


def _sections(det: Detector, d: dict, source: str) -> tuple[Section, ...]:
    """The ``sections`` of a detector YAML: consecutive layer blocks, or for a GDML detector depths
    along the normal (the last one's defaults to the rest); each mesh's dz is its section's depth
    over its n_z bins."""
    if "mesh" in d or d.get("sampling_fraction") is not None or d.get("cell_mm") is not None:
        raise InputError(source, "a detector with sections gives each section its mesh and sampling fraction "
                                 "(no top-level mesh, sampling_fraction or cell_mm)")
    extent = "depth_mm" if det.gdml else "blocks"
    for i, raw in enumerate(d["sections"]):
        _known_keys(raw, ("name", extent, "mesh", "sampling_fraction"), f"sections[{i}].", source)
        _check_sampling_fraction(raw.get("sampling_fraction"), f"sections[{i}].", source)
    sections = tuple(Section(str(s["name"]), 0 if det.gdml else int(s["blocks"]), Mesh(),
                             None if s.get("sampling_fraction") is None else float(s["sampling_fraction"]))
                     for s in d["sections"])
    if det.gdml:
        sections = _section_depths(sections, d["sections"], det.depth_mm, source)
    elif sum(s.blocks for s in sections) != len(det.blocks) or any(s.blocks < 1 for s in sections):
        raise InputError(source, f"the sections' blocks ({[s.blocks for s in sections]}) must cover the "
                                 f"{len(det.blocks)} layer blocks in order")
    det = replace(det, sections=sections)
    out = []
    for section, raw, (start, end) in zip(sections, d["sections"], det.section_ranges):
        mesh = dict(raw.get("mesh", {}))
        if "dz" in mesh:
            raise InputError(source, f"section {section.name}: dz follows from the section's depth and n_z")
        mesh["dz"] = round((end - start) / mesh.get("n_z", 45), 4)
        out.append(replace(section, mesh=_mesh(mesh, f"section {section.name}: mesh.", source)))
    return tuple(out)


def _section_depths(sections: tuple[Section, ...], raw: list, depth: float, source: str) -> tuple[Section, ...]:
    """A GDML detector's sections with their depths: each gives depth_mm but the last, which takes the
    rest of the calorimeter's depth."""
    given = [None if s.get("depth_mm") is None else float(s["depth_mm"]) for s in raw]
    if None in given[:-1] or any(v is not None and v <= 0 for v in given):
        raise InputError(source, "each section of a GDML detector but the last gives its depth_mm (> 0), from the "
                                 "front face on; the last takes the rest")
    rest = depth - sum(given[:-1])
    if rest <= 0 or (given[-1] is not None and abs(given[-1] - rest) > 1e-3):
        raise InputError(source, f"the sections' depths {given} must add up to the calorimeter's depth "
                                 f"{depth:g} mm")
    return tuple(replace(s, depth_mm=v) for s, v in zip(sections, given[:-1] + [rest]))


def _known_keys(d: dict, known, where: str, source: str) -> None:
    """Refuse a mapping of the detector YAML that is not one, or has a key calofm would ignore (a typo)."""
    if not isinstance(d, dict):
        raise InputError(source, f"{where.rstrip('.') or 'the file'}: expected a mapping, got {d!r}")
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise InputError(source, f"{where}{unknown[0]}: unknown key; known: {', '.join(known)}")


def _mesh(d: dict, where: str, source: str) -> Mesh:
    _known_keys(d, [f.name for f in fields(Mesh)], where, source)
    return Mesh(**d)


def _check_sampling_fraction(value, where: str, source: str) -> None:
    if value is not None and not 0 < float(value) <= 1:
        raise InputError(source, f"{where}sampling_fraction {value}: must be in (0, 1] (visible / incident "
                                 "energy), or left out to be measured")


SAMPLING_FRACTION_LINE = re.compile(r"^sampling_fraction:.*$", re.MULTILINE)


def record_sampling_fraction(path: str | Path, mean: float, error: float) -> None:
    """Write a measured sampling fraction into the detector YAML or sidecar ``path`` (created if it does
    not exist), replacing its top-level ``sampling_fraction`` line and keeping the rest as written."""
    import yaml

    path = Path(path)
    text = path.read_text() if path.exists() else ""
    line = f"sampling_fraction: {mean:.5f}  # measured by calofm detectors --measure: {mean:.5f} +- {error:.5f}"
    if SAMPLING_FRACTION_LINE.search(text):
        text = SAMPLING_FRACTION_LINE.sub(line, text, count=1)
    else:
        text = f"{text.rstrip()}\n{line}\n".lstrip()
    try:
        recorded = yaml.safe_load(text).get("sampling_fraction")
    except (AttributeError, yaml.YAMLError):
        recorded = None
    if recorded != round(mean, 5):
        raise InputError(path, "cannot record the sampling fraction: the file is not a block mapping with a "
                               f"top-level sampling_fraction line; write sampling_fraction: {mean:.5f} yourself")
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("calofm.simulate.presets").iterdir()
                  if p.name.endswith(".yaml"))


def get_detector(spec: str, sidecar: str | None = None) -> Detector:
    """A preset by name, a detector YAML file by path, or a GDML file with an optional ``sidecar``
    detector YAML (name, mesh, sampling fraction; without it: the file's stem, the universal mesh
    over its depth, a sampling fraction still to measure)."""
    if spec.endswith(".gdml"):
        d = {} if sidecar is None else read_yaml_mapping(sidecar, "sidecar YAML", "name, mesh, sampling_fraction")
        return Detector.from_dict({"name": Path(spec).stem, **d, "gdml": str(Path(spec).resolve())},
                                  sidecar or spec)
    if sidecar is not None:
        raise InputError("--calo-sidecar", "goes with a GDML detector (--detector FILE.gdml)")
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        if not Path(spec).is_file():
            raise InputError(spec, "no such detector file")
        return Detector.from_yaml(spec)
    if spec not in preset_names():
        raise InputError(spec, f"unknown detector; presets: {', '.join(preset_names())} (or a YAML file)")
    with resources.as_file(resources.files("calofm.simulate.presets") / f"{spec}.yaml") as path:
        return Detector.from_yaml(path)
