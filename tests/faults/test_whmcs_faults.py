"""Fault rows on the WHMCS API (runbook 2): `Authentication Failed`, `Invalid IP`, a 500, an
HTML page, a reply that never comes. Each is WhmcsUnavailable (P2, vendor WHMCS): on-call at
L1, the vendor at L4 at once, the lead at L2 after 30 min (3 s); the daemon counts each under
its own reason.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes import FakeWhmcs
from tests.faults.harness import L2_AFTER, PAGE_TIMEOUT, Rig

PHP_FATAL = ("<html><body><b>Fatal error</b>: Allowed memory size exhausted"
             " in /var/www/whmcs/includes/api.php</body></html>")
MAINTENANCE = "<!DOCTYPE html><html><head><title>Down for maintenance</title></head><body>Back soon</body></html>"

FAULTS: dict[str, tuple[Callable[[FakeWhmcs], None], str]] = {
    "authentication_failed": (lambda w: w.fail_auth("Authentication Failed"), "auth"),
    "invalid_ip": (lambda w: w.deny_ip("203.0.113.9"), "ip_denied"),
    "http_500": (lambda w: w.answer(500, PHP_FATAL), "http_5xx"),
    "html_page": (lambda w: w.answer(200, MAINTENANCE), "bad_reply"),
    "hanging_reply": (lambda w: w.hang(), "timeout"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_whmcs_fault_pages_whmcs_unavailable_p2_with_vendor_l4(rig: Rig, fault: str) -> None:
    inject, reason = FAULTS[fault]
    inject(rig.whmcs)
    l1 = await rig.trigger("WhmcsUnavailable", "oncall")
    assert (l1.severity, l1.level, l1.labels["check"], l1.labels["vendor"]) == ("P2", "L1", "whmcs", "WHMCS")
    await rig.trigger("WhmcsUnavailable", "vendors")
    await rig.trigger("WhmcsUnavailable", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
    errors = {dict(labels)["reason"]: v for (name, labels), v in (await rig.daemon.metrics()).items()
              if name == "portal_check_errors_total" and dict(labels).get("check") == "whmcs"}
    assert set(errors) == {reason} and errors[reason] > 0, errors
    rig.whmcs.behave_normally()
    rig.whmcs.release()
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1"), ("vendors", "L4"), ("lead", "L2")})
    assert rig.incidents() == {
        "WhmcsUnavailable{check=whmcs}": ["opened", "resolved"],
        "MonitorCheckFailing{check=whmcs}": ["opened", "held: inhibited by WhmcsUnavailable", "resolved"],
    }, rig.story()
