"""Guards: the registry and the built-in checks, the planted faults, the cases and the audit that measures them."""
