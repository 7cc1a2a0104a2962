"""Policy router (seed 002): oracle 9-cell matrix labels, SFT + DPO of a small Gemma, editable policy map."""

from routers.policy.matrix import ORACLE_MATRIX, Outcome, PolicyLabel, policy_for
from routers.policy.policy_map import PolicyMap, load_policy_map
from routers.policy.prompts import ParsedPolicy, parse_policy, router_prompt

__all__ = ["ORACLE_MATRIX", "Outcome", "ParsedPolicy", "PolicyLabel", "PolicyMap", "load_policy_map",
           "parse_policy", "policy_for", "router_prompt"]
