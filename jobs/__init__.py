"""candlecast: jobs package."""
