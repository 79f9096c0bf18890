"""The HTTP API: every response decided by the policy, every third-party provision in the ledger."""
