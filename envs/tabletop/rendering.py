"""MuJoCo renderers whose GL contexts are released cleanly at interpreter exit.

MuJoCo registers its EGL teardown when the first GL context is created; a renderer that is
garbage-collected after that fails noisily inside EGL. Exit hooks run last-registered first, so
the hook that closes the live renderers is (re-)registered after the first context exists.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any

import mujoco

_OWNERS: weakref.WeakSet = weakref.WeakSet()


def _close_all() -> None:
    for owner in list(_OWNERS):
        owner.close()


def make_renderer(owner: Any, model: mujoco.MjModel, height: int, width: int, depth: bool) -> mujoco.Renderer:
    """A renderer for ``owner`` (an object with ``close()`` that releases its renderers)."""
    if not hasattr(mujoco, "Renderer"):  # mujoco skips it silently when its GL imports fail
        raise RuntimeError("mujoco.Renderer is unavailable: MuJoCo's renderer needs PyOpenGL (pip install pyopengl) "
                           "and, without a display, MUJOCO_GL=egl with libEGL installed")
    renderer = mujoco.Renderer(model, height, width)
    if depth:
        renderer.enable_depth_rendering()
    if not _OWNERS:
        atexit.unregister(_close_all)
        atexit.register(_close_all)
    _OWNERS.add(owner)
    return renderer


def release_renderers(owner: Any, *renderers: mujoco.Renderer | None) -> None:
    for renderer in renderers:
        if renderer is not None:
            renderer.close()
    _OWNERS.discard(owner)
