"""The access service: identity, policy, approvals, and the only reader of tier private keys."""
