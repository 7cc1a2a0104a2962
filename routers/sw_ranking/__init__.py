"""RouteLLM's similarity-weighted ranking router, for a small/large pair (closed-form Bradley-Terry)."""

from routers.sw_ranking.router import SWRankingConfig, SWRankingRouter, similarity_weighted_win_rates

__all__ = ["SWRankingConfig", "SWRankingRouter", "similarity_weighted_win_rates"]
