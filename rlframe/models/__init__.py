"""Policy models: tiny builders, loading, multimodal plumbing, token log-probs (every role uses them)."""
