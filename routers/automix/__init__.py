"""AutoMix: small model answers, verifies itself with N sampled verdicts, a POMDP / threshold decides."""

from routers.automix.policies import (
    CascadeCosts,
    Policy,
    POMDPPolicy,
    SelfConsistencyPolicy,
    ThresholdPolicy,
    policy_from_dict,
)
from routers.automix.router import AutomixConfig, AutomixRouter
from routers.automix.stored_votes import read_verifier_votes, write_verifier_votes
from routers.automix.verification import agreement_score, answer_entropy, parse_verdict, tally_verdicts

__all__ = [
    "AutomixConfig",
    "AutomixRouter",
    "CascadeCosts",
    "POMDPPolicy",
    "Policy",
    "SelfConsistencyPolicy",
    "ThresholdPolicy",
    "agreement_score",
    "answer_entropy",
    "parse_verdict",
    "policy_from_dict",
    "read_verifier_votes",
    "tally_verdicts",
    "write_verifier_votes",
]
