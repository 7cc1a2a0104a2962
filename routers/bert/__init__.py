"""RouteLLM's bert router: a small encoder (MiniLM) fine-tuned end to end as the routing classifier.

Torch and transformers load when a router is fitted or loaded, not on import of this package.
"""

from routers.bert.router import BertRouter, BertRouterConfig

__all__ = ["BertRouter", "BertRouterConfig"]
