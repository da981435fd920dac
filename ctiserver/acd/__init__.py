"""The ACD feature: the one task that owns the engine (``runner``) and the agents' and
supervisors' controls on top of it (``control``)."""
