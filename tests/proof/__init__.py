"""Proofs of issue 6: a simulated day (signal, not noise), two replicas, delivery under faults."""
