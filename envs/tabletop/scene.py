"""The tabletop scene: loading the MJCF, object slots, and per-episode layout of objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

SCENE_XML = Path(__file__).parent / "assets" / "tabletop.xml"

FIXED_CAMERAS = ("front", "left", "right")
WRIST_CAMERA = "wrist"
CAMERAS = FIXED_CAMERAS + (WRIST_CAMERA,)

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
}
SHAPES = ("cube", "ball", "cylinder")
SLOTS = tuple(f"{shape}_{i}" for shape in SHAPES for i in range(2))

# Where objects may be placed (table frame, metres) and how far apart their centres must be.
PLACEMENT_LOW = np.array([-0.15, -0.15])
PLACEMENT_HIGH = np.array([0.15, 0.15])
MIN_SEPARATION = 0.08
PARKING = np.array([2.5, 2.5, 0.5])


@dataclass(frozen=True)
class SceneObject:
    """One active object of an episode."""

    slot: str
    shape: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def load_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(SCENE_XML))


def object_half_height(model: mujoco.MjModel, slot: str) -> float:
    """Height of the object's centre above the table when it rests upright."""
    geom = model.geom(slot)
    if geom.type[0] == mujoco.mjtGeom.mjGEOM_SPHERE:
        return float(geom.size[0])
    return float(geom.size[2] if geom.type[0] == mujoco.mjtGeom.mjGEOM_BOX else geom.size[1])


def sample_layout(rng: np.random.Generator, num_objects: int) -> tuple[list[SceneObject], np.ndarray]:
    """Choose ``num_objects`` slots with distinct colours and non-overlapping table positions.

    Returns the objects and their xy positions ``[num_objects, 2]``.
    """
    if not 1 <= num_objects <= len(COLOURS):
        raise ValueError(f"num_objects must be in [1, {len(COLOURS)}], got {num_objects}")
    slots = rng.choice(len(SLOTS), size=num_objects, replace=False)
    colours = rng.choice(len(COLOURS), size=num_objects, replace=False)
    colour_names = list(COLOURS)
    objects = [
        SceneObject(slot=SLOTS[s], shape=SLOTS[s].rsplit("_", 1)[0], colour=colour_names[c])
        for s, c in zip(slots, colours)
    ]
    positions: list[np.ndarray] = []
    while len(positions) < num_objects:
        candidate = rng.uniform(PLACEMENT_LOW, PLACEMENT_HIGH)
        if all(np.linalg.norm(candidate - p) >= MIN_SEPARATION for p in positions):
            positions.append(candidate)
    return objects, np.stack(positions)


def apply_layout(model: mujoco.MjModel, data: mujoco.MjData, objects: list[SceneObject], xy: np.ndarray) -> None:
    """Colour and place the active objects; park the rest out of sight with physics switched off."""
    active = {obj.slot: (obj, pos) for obj, pos in zip(objects, xy)}
    for index, slot in enumerate(SLOTS):
        geom_id = model.geom(slot).id
        body_id = model.body(slot).id
        qpos_adr = model.jnt_qposadr[model.body_jntadr[body_id]]
        qvel_adr = model.jnt_dofadr[model.body_jntadr[body_id]]
        if slot in active:
            obj, pos = active[slot]
            model.geom_rgba[geom_id] = (*COLOURS[obj.colour], 1.0)
            model.geom_contype[geom_id] = model.geom_conaffinity[geom_id] = 1
            model.body_gravcomp[body_id] = 0.0
            position = np.array([pos[0], pos[1], object_half_height(model, slot)])
        else:
            model.geom_contype[geom_id] = model.geom_conaffinity[geom_id] = 0
            model.body_gravcomp[body_id] = 1.0
            position = PARKING + np.array([0.2 * index, 0.0, 0.0])
        data.qpos[qpos_adr : qpos_adr + 3] = position
        data.qpos[qpos_adr + 3 : qpos_adr + 7] = (1.0, 0.0, 0.0, 0.0)
        data.qvel[qvel_adr : qvel_adr + 6] = 0.0
