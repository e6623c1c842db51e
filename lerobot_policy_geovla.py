"""LeRobot plugin entry point: importing it registers the ``geovla`` policy type.

LeRobot imports every installed distribution whose name starts with ``lerobot_policy_``; this
project's distribution is named ``lerobot_policy_geovla`` so that ``lerobot-train
--policy.type=geovla`` and ``lerobot-eval --policy.path=...`` find the policy.
"""

from policies.configuration_geovla import GeoVLAConfig
from policies.modeling_geovla import GeoVLAPolicy
from policies.processor_geovla import make_geovla_pre_post_processors

__all__ = ["GeoVLAConfig", "GeoVLAPolicy", "make_geovla_pre_post_processors"]
