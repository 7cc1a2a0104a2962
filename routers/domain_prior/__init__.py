"""A router for traffic from known domains: P(domain | query) x each domain's mean gap, blended with a
ridge on the gap (``model.py``)."""

from routers.domain_prior.model import DomainPriorWeights, PriorSettings, choose_prior_weight, fit_prior
from routers.domain_prior.router import DomainPriorConfig, DomainPriorRouter

__all__ = ["DomainPriorConfig", "DomainPriorRouter", "DomainPriorWeights", "PriorSettings", "choose_prior_weight",
           "fit_prior"]
