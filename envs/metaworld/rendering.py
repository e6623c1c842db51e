"""Rendering MetaWorld cheaply on a software rasteriser: a render-only copy of the model with simplified
arm meshes, one draw for colour and depth, and the 180-degree turn of the corner cameras.

``perf/bench_metaworld_render.py`` measures what each setting of :class:`RenderSettings` costs.
"""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np



# MetaWorld's corner cameras have their image "up" pointing at the floor: their images are rotated
# 180 degrees, and the env rotates them back (image, depth and camera parameters alike).
ROTATED_CAMERAS = frozenset({"corner", "corner2", "corner3"})


SIMPLIFY_MIN_FACES = 1000  # only meshes above this are simplified: the arm links, not task objects


VISIBLE_GEOM_GROUPS = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)  # MuJoCo's default visible groups


@dataclass(frozen=True)
class RenderSettings:
    """What the renderer draws; every setting trades looks for time on a software rasteriser.

    ``RenderSettings(shadows=True, reflections=True, offsamples=None, mesh_cell=None)`` draws
    what MetaWorld draws.

    Args:
        shadows: shadow maps (MetaWorld's default light casts one; the costliest setting).
        reflections: planar reflections of reflective materials (the scene is drawn again).
        offsamples: multisampling of the offscreen buffer; ``None`` keeps the model's (4).
        mesh_cell: simplify meshes of more than ``SIMPLIFY_MIN_FACES`` faces by merging the
            vertices within each cube of this size (metres; each vertex moves by less than
            ``mesh_cell * sqrt(3)``); ``None`` keeps the original meshes.
    """

    shadows: bool = False
    reflections: bool = False
    offsamples: int | None = 0
    mesh_cell: float | None = 0.01


DEFAULT_RENDERING = RenderSettings()


def simplify_mesh(vertices: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: merge the vertices in each ``cell``-sized cube into their mean.

    Faces that collapse are dropped and repeated faces kept once; winding (the outward side) is
    kept. Returns ``(vertices [V, 3], faces [F, 3])`` with only the vertices that faces use.
    """
    if cell <= 0:
        raise ValueError(f"mesh cell size must be positive, got {cell}")
    keys = np.floor(vertices / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.ravel()
    merged = np.zeros((counts.size, 3))
    np.add.at(merged, cluster, vertices)
    merged /= counts[:, None]
    tri = cluster[faces]
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
    first = np.argmin(tri, axis=1)  # rotate each face to start at its smallest index: same winding
    tri = np.unique(np.take_along_axis(tri, (first[:, None] + np.arange(3)) % 3, axis=1), axis=0)
    used, remapped = np.unique(tri, return_inverse=True)
    return merged[used], remapped.reshape(-1, 3)


def build_render_model(
    sim_model: mujoco.MjModel, xml_path: str, settings: RenderSettings, height: int, width: int
) -> mujoco.MjModel:
    """A render-only copy of ``sim_model`` (compiled from ``xml_path``) with ``settings`` applied.

    A simplified mesh is given in the compiled mesh frame and its geoms the compiled poses, so the
    copy places it where the simulation places the original. The offscreen buffer is the image size.
    """
    spec = mujoco.MjSpec.from_file(xml_path)
    if settings.mesh_cell is not None:
        _simplify_meshes(spec, sim_model, settings.mesh_cell)
    model = spec.compile()
    sizes = ("nq", "nmocap", "nbody", "ngeom", "nsite", "ncam", "nlight")
    differ = [n for n in sizes if getattr(model, n) != getattr(sim_model, n)]
    if differ or not np.array_equal(model.geom_bodyid, sim_model.geom_bodyid):
        what = ", ".join(differ) or "geom_bodyid"
        raise RuntimeError(f"the model compiled from {xml_path} differs from the simulated one in {what}")
    model.stat.extent = sim_model.stat.extent  # the depth range (znear, zfar) scales with it
    if settings.offsamples is not None:
        model.vis.quality.offsamples = settings.offsamples
    model.vis.global_.offwidth, model.vis.global_.offheight = width, height
    return model


def _simplify_meshes(spec: mujoco.MjSpec, sim_model: mujoco.MjModel, cell: float) -> None:
    """Replace the big meshes of ``spec`` by simplified compiled meshes of ``sim_model``.

    Spec meshes and geoms are listed in the order of the compiled model's ids.
    """
    simplified = set()
    for mesh_id, mesh in enumerate(spec.meshes):
        if sim_model.mesh_facenum[mesh_id] <= SIMPLIFY_MIN_FACES:
            continue
        vert, nvert = sim_model.mesh_vertadr[mesh_id], sim_model.mesh_vertnum[mesh_id]
        face, nface = sim_model.mesh_faceadr[mesh_id], sim_model.mesh_facenum[mesh_id]
        vertices, faces = simplify_mesh(
            sim_model.mesh_vert[vert : vert + nvert].astype(np.float64),
            sim_model.mesh_face[face : face + nface],
            cell,
        )
        mesh.file = ""
        mesh.uservert = vertices.ravel().tolist()
        mesh.userface = faces.ravel().tolist()
        mesh.scale = [1.0, 1.0, 1.0]
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # a simplified surface need not be closed
        simplified.add(mesh.name)
    for geom_id, geom in enumerate(spec.geoms):
        if geom.meshname in simplified:
            geom.pos = sim_model.geom_pos[geom_id]
            geom.quat = sim_model.geom_quat[geom_id]
            geom.alt.type = mujoco.mjtOrientation.mjORIENTATION_QUAT


def rotate_image_180(image: np.ndarray) -> np.ndarray:
    """An image ``[H, W, ...]`` turned upside down and left to right, as a contiguous array."""
    return np.ascontiguousarray(image[::-1, ::-1])


def rotate_camera_180(
    intrinsics: np.ndarray, extrinsics: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Camera parameters of an image rotated by :func:`rotate_image_180`.

    Pixel ``(u, v)`` moves to ``(W - u, H - v)``: the camera turns 180 degrees about its optical
    axis (x and y negate) and the principal point moves to ``(W - cx, H - cy)``.
    """
    rotated_k = intrinsics.copy()
    rotated_k[0, 2] = width - intrinsics[0, 2]
    rotated_k[1, 2] = height - intrinsics[1, 2]
    rotated_e = extrinsics * np.array([[-1.0], [-1.0], [1.0]], dtype=extrinsics.dtype)
    return rotated_k, rotated_e


_LIVE_RENDERERS: weakref.WeakSet = weakref.WeakSet()


def _close_live_renderers() -> None:
    for renderer in list(_LIVE_RENDERERS):
        renderer.close()


class RGBDRenderer:
    """Colour and depth of a MuJoCo camera from one draw (``mujoco.Renderer`` draws twice).

    One offscreen context of ``height x width`` serves every camera. Depth is metres along the
    optical axis; pixels that see nothing read the far plane (``zfar * extent``). Renderers still
    open at interpreter exit are closed before MuJoCo tears EGL down.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, shadows: bool, reflections: bool) -> None:
        if not hasattr(mujoco, "GLContext"):  # mujoco skips it silently when its GL imports fail
            raise RuntimeError("mujoco.GLContext is unavailable: without a display MuJoCo needs MUJOCO_GL=egl "
                               "with libEGL installed, and PyOpenGL")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(f"image {height}x{width} exceeds the model's offscreen buffer "
                             f"{model.vis.global_.offheight}x{model.vis.global_.offwidth}")
        self.model, self.height, self.width = model, height, width
        self._gl: Any = mujoco.GLContext(width, height)
        self._gl.make_current()
        self._context: Any = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = reflections
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        extent = model.stat.extent
        self._near, self._far = model.vis.map.znear * extent, model.vis.map.zfar * extent
        if not _LIVE_RENDERERS:  # run after the EGL teardown hook MuJoCo registered with the first context
            atexit.unregister(_close_live_renderers)
            atexit.register(_close_live_renderers)
        _LIVE_RENDERERS.add(self)

    def render(self, data: mujoco.MjData, camera_id: int, depth: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``(rgb uint8 [H, W, 3], depth float32 [H, W] or None)`` of fixed camera ``camera_id``."""
        if self._gl is None:
            raise RuntimeError("render called after close")
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            self.model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        raw = np.empty((self.height, self.width), dtype=np.float32) if depth else None
        mujoco.mjr_readPixels(rgb, raw, self._rect, self._context)
        rgb = np.ascontiguousarray(rgb[::-1])  # OpenGL's rows run bottom to top
        if raw is None:
            return rgb, None
        # Reversed z: 1 at the near plane, 0 at the far plane.
        near, far = self._near, self._far
        metres = near * far / (near + raw[::-1].astype(np.float64) * (far - near))
        return rgb, metres.astype(np.float32)

    def close(self) -> None:
        if self._gl is not None:
            self._context.free()
            self._gl.free()
            self._gl = self._context = None
        _LIVE_RENDERERS.discard(self)
