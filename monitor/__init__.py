"""portal-monitor: the Customer Portal's incident-response runbook as a monitoring daemon."""

__version__ = "0.1.0"
