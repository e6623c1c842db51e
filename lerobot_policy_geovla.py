"""LeRobot plugin entry point: importing it registers the ``geovla`` policy type and the
``geovla_tabletop`` environment.

LeRobot imports every installed distribution whose name starts with ``lerobot_policy_``; this
project's distribution is named ``lerobot_policy_geovla`` so that ``lerobot-train
--policy.type=geovla``, ``lerobot-eval --policy.path=...`` and ``--env.type=geovla_tabletop``
find the policy and the built-in task.
"""

from envs.lerobot_env import TabletopEnvConfig
from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors

__all__ = ["GeoVLAConfig", "GeoVLAPolicy", "TabletopEnvConfig", "make_geovla_pre_post_processors"]
