"""The fault-injection matrix: the real daemon, the shipped rules, one end-to-end test per fault."""
