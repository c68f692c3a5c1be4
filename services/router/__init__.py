"""The router: canary and A/B/n traffic split between model versions, with an exposure log."""
