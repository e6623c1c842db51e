"""LeRobot plugin entry point: importing it registers the ``geovla`` policy type and the
``geovla_tabletop`` / ``geovla_metaworld`` environments.

LeRobot imports every installed distribution whose name starts with ``lerobot_policy_``; this
project's distribution is named ``lerobot_policy_geovla`` so that ``lerobot-train
--policy.type=geovla``, ``lerobot-eval --policy.path=...`` and ``--env.type=geovla_tabletop``
find the policy and the built-in task.

The project installs its folders as the top-level packages ``envs``, ``policies``, ``geometry``
and ``vla``. A folder or module of the same name earlier on ``sys.path`` (a project of your own
run from its folder with ``python script.py`` or ``python -m``) would hide them; importing the
plugin then stops with an error that names it instead of failing somewhere inside.
"""

import importlib.util
from pathlib import Path

PACKAGES = ("envs", "policies", "geometry", "vla")


def _check_packages_are_ours() -> None:
    home = Path(__file__).resolve().parent
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is None or origin.parent.parent != home:
            raise ImportError(
                f"the package {name!r} resolves to {origin or 'a namespace folder'}, not geovla's {home / name}: "
                f"a folder or module named {name!r} earlier on sys.path hides it. Rename yours, or run from "
                "another folder (console commands such as lerobot-train do not look in the current folder)."
            )


_check_packages_are_ours()

from envs.lerobot_env import MetaWorldEnvConfig, TabletopEnvConfig  # noqa: E402
from policies.configuration_geovla import GeoVLAConfig  # noqa: E402
from policies.modeling_geovla import GeoVLAPolicy  # noqa: E402
from policies.processor_geovla import make_geovla_pre_post_processors  # noqa: E402

__all__ = ["GeoVLAConfig", "GeoVLAPolicy", "MetaWorldEnvConfig", "TabletopEnvConfig",
           "make_geovla_pre_post_processors"]
