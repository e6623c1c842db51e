"""Per-step cost of MetaWorld with every camera rendered with depth, setting by setting, as JSON.

    MUJOCO_GL=egl python perf/bench_metaworld_render.py --rounds 6 --steps 4

A step is the MetaWorld step plus colour and depth of every camera. The first rows render with
``mujoco.Renderer`` (one for colour, one for depth) the way a plain wrapper does, starting from
MetaWorld's own model, each row adding one change to the row before; then come the env's rows
(``envs.metaworld``). Rows marked ``adopted: false`` add one change to the env's settings
that the env does not make. The built-in tabletop task is timed alongside for reference.

All rows are set up first and then timed in turns (``--rounds`` turns of ``--steps`` steps
each), so that a burst of load from other processes falls on every row alike. Each row reports
the median of its steps and its fastest step; the speed-ups compare fastest steps, which other
processes disturb least. Steps follow MetaWorld's expert.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from envs.metaworld import DEFAULT_CAMERAS, MetaWorldEnv, RenderSettings, canonical_task, make_metaworld_expert
from envs.metaworld.tasks import make_metaworld_sim
from envs.tabletop.env import TabletopEnv
from envs.tabletop.expert import make_expert
from envs.tabletop.rendering import make_renderer, release_renderers

WARMUP_STEPS = 2


@dataclass
class Row:
    """One configuration: ``step`` runs one timed step, ``close`` releases it."""

    name: str
    description: str
    adopted: bool
    step: Callable[[], None]
    close: Callable[[], None]
    times: list[float] = field(default_factory=list)

    def time_steps(self, steps: int) -> None:
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            self.times.append(time.perf_counter() - start)

    def ms_per_step(self) -> float:
        return round(1000 * float(np.median(self.times)), 2)

    def fastest_ms(self) -> float:
        return round(1000 * min(self.times), 2)


class PlainWrapper:
    """MetaWorld's model rendered by ``mujoco.Renderer``: two draws per camera (colour, depth)."""

    def __init__(self, task: str, size: int, cameras: tuple[str, ...], changes: list[Callable]) -> None:
        self.sim = make_metaworld_sim(task)
        for change in changes:  # before the renderers: GL buffers follow the model at creation
            change(self.sim.model, size)
        self.policy = ENV_POLICY_MAP[task]()
        self.cameras = cameras
        self.colour = make_renderer(self, self.sim.model, size, size, depth=False)
        self.depth = make_renderer(self, self.sim.model, size, size, depth=True)
        self.state, _ = self.sim.reset()

    def step(self) -> None:
        self.state, *_ = self.sim.step(np.clip(self.policy.get_action(self.state), -1, 1))
        for camera in self.cameras:
            for renderer in (self.colour, self.depth):
                renderer.update_scene(self.sim.data, camera=camera)
                renderer.render()

    def close(self) -> None:
        release_renderers(self, self.colour, self.depth)
        self.sim.close()


def _buffer_of_image_size(model: mujoco.MjModel, size: int) -> None:
    model.vis.global_.offwidth = model.vis.global_.offheight = size


PLAIN_CHANGES: list[tuple[str, str, Callable[[mujoco.MjModel, int], None]]] = [
    ("metaworld_defaults", "MetaWorld's model as it is", lambda model, size: None),
    ("no_shadows", "light_castshadow = 0", lambda model, size: model.light_castshadow.fill(0)),
    ("no_reflections", "mat_reflectance = 0 (no second draw of the mirrored scene)",
     lambda model, size: model.mat_reflectance.fill(0)),
    ("no_multisampling", "vis.quality.offsamples = 0",
     lambda model, size: setattr(model.vis.quality, "offsamples", 0)),
    ("buffer_image_size", "offscreen buffer of the image size", _buffer_of_image_size),
]


def _plain_rows(task: str, size: int, cameras: tuple[str, ...]) -> list[Row]:
    rows = []
    for index, (name, description, _) in enumerate(PLAIN_CHANGES):
        wrapper = PlainWrapper(task, size, cameras, [change for *_, change in PLAIN_CHANGES[: index + 1]])
        if index == 0:
            quality, buffer = wrapper.sim.model.vis.quality, wrapper.sim.model.vis.global_
            description += (f" ({quality.shadowsize} px shadow map, {quality.offsamples}x multisampling, "
                            f"{buffer.offwidth}x{buffer.offheight} buffer)")
        rows.append(Row(name, description, True, wrapper.step, wrapper.close))
    return rows


def _env_row(
    name: str,
    description: str,
    adopted: bool,
    task: str,
    size: int,
    cameras: tuple[str, ...],
    settings: RenderSettings = RenderSettings(),
    change: Callable[[mujoco.MjModel], None] | None = None,
) -> Row:
    env = MetaWorldEnv(task, image_size=size, cameras=cameras, geometry=True, render_settings=settings)
    if change is not None:
        change(env.render_model)  # before the first render creates the GL context
    expert = make_metaworld_expert(env)
    obs = env.reset(seed=0)[0]

    def step() -> None:
        nonlocal obs
        obs = env.step(expert(obs))[0]

    return Row(name, description, adopted, step, env.close)


def _without_skybox(model: mujoco.MjModel) -> None:
    """MuJoCo draws a skybox when a texture has the skybox type; retype it before the context exists."""
    model.tex_type[model.tex_type == mujoco.mjtTexture.mjTEXTURE_SKYBOX] = mujoco.mjtTexture.mjTEXTURE_CUBE


def _env_rows(task: str, size: int, cameras: tuple[str, ...]) -> list[Row]:
    args = (task, size, cameras)
    cell = RenderSettings().mesh_cell
    return [
        _env_row("single_pass_rgbd", "one GL context for all cameras; colour and depth read from one draw", True,
                 *args, settings=RenderSettings(mesh_cell=None)),
        _env_row("simplified_meshes", f"arm meshes simplified by {cell * 100:g} cm vertex clustering "
                 "(66.5k -> 13.3k faces): the env's default", True, *args),
        _env_row("simplified_meshes_2cm", "2 cm vertex clustering instead (5.2k faces)", False, *args,
                 settings=RenderSettings(mesh_cell=0.02)),
        _env_row("no_textures", "materials without textures (table, floor, walls)", False, *args,
                 change=lambda model: model.mat_texid.fill(-1)),
        _env_row("one_light", "the first of the 3 lights only", False, *args,
                 change=lambda model: model.light_active.__setitem__(slice(1, None), 0)),
        _env_row("no_skybox", "no skybox (background reads the far plane)", False, *args, change=_without_skybox),
        _env_row("no_haze", "vis.map.haze = 0", False, *args,
                 change=lambda model: setattr(model.vis.map, "haze", 0.0)),
    ]


def _physics_row(task: str) -> Row:
    sim, policy = make_metaworld_sim(task), ENV_POLICY_MAP[task]()
    state = sim.reset()[0]

    def step() -> None:
        nonlocal state
        state = sim.step(np.clip(policy.get_action(state), -1, 1))[0]

    return Row("physics_only", "MetaWorld's step and expert, nothing rendered", False, step, sim.close)


def _tabletop_row(size: int) -> Row:
    env = TabletopEnv(task="pick", image_size=size, geometry=True)
    expert = make_expert(env)
    obs = env.reset(seed=0)[0]

    def step() -> None:
        nonlocal obs
        obs, _, terminated, truncated, _ = env.step(expert(obs))
        if terminated or truncated:
            obs = env.reset()[0]

    return Row("tabletop", f"the built-in task, its {len(env.cameras)} cameras with depth", False, step, env.close)


def _gl_renderer() -> str:
    """The OpenGL renderer MuJoCo draws with (``llvmpipe`` is Mesa's software rasteriser)."""
    from OpenGL import GL

    context = mujoco.GLContext(16, 16)
    context.make_current()
    name = GL.glGetString(GL.GL_RENDERER).decode()
    context.free()
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pick-place")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cameras", nargs="+", default=list(DEFAULT_CAMERAS))
    parser.add_argument("--rounds", type=int, default=6, help="turns in which every row is timed")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row and round")
    args = parser.parse_args()
    task, size, cameras = canonical_task(args.task), args.image_size, tuple(args.cameras)
    if WARMUP_STEPS + args.rounds * args.steps >= 500:
        raise ValueError(f"{args.rounds} rounds of {args.steps} steps pass MetaWorld's 500-step episode")

    rows = _plain_rows(task, size, cameras) + _env_rows(task, size, cameras)
    references = [_physics_row(task), _tabletop_row(size)]
    for row in rows + references:
        for _ in range(WARMUP_STEPS):
            row.step()
    for _ in range(args.rounds):
        for row in rows + references:
            row.time_steps(args.steps)
    for row in rows + references:
        row.close()

    baseline = rows[0].fastest_ms()
    adopted = next(row for row in rows if row.name == "simplified_meshes")
    result: dict[str, Any] = {
        "task": task,
        "image_size": size,
        "cameras": list(cameras),
        "timed_steps_per_row": args.rounds * args.steps,
        "machine": {"processor": platform.processor() or platform.machine(), "mujoco": mujoco.__version__,
                    "gl_renderer": _gl_renderer()},
        "rows": [
            {
                "name": row.name,
                "description": row.description,
                "adopted": row.adopted,
                "ms_per_step": row.ms_per_step(),
                "fastest_ms_per_step": row.fastest_ms(),
                "fastest_ms_per_camera": round(row.fastest_ms() / len(cameras), 2),
                "speedup_vs_defaults": round(baseline / row.fastest_ms(), 1),
            }
            for row in rows
        ],
        "env": {"ms_per_step": adopted.ms_per_step(), "fastest_ms_per_step": adopted.fastest_ms()},
        "references": [
            {"name": row.name, "description": row.description, "ms_per_step": row.ms_per_step(),
             "fastest_ms_per_step": row.fastest_ms()}
            for row in references
        ],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
