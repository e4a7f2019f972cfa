"""Sweeps: small jobs that tidy up after the hub, each safe to run again at any time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hub.signing import certificate_number

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger("hub.scheduler")


def reap_leases(hub: Hub, now: datetime, **params: Any) -> str:
    """Work whose worker died holding it goes back to the queue (claims reap too; this covers an idle hub)."""
    return f"{hub.queue.reap()} expired lease(s) returned to the queue"


def warn_of_certificate_expiry(hub: Hub, now: datetime, warn_days: int = 30, **params: Any) -> str:
    """Each signer's certificate and each partner's trusted certificate that expires within `warn_days`: a
    warning in the log and in this run's result (shown by `jobs` and /status)."""
    horizon = now + timedelta(days=warn_days)
    checked = 0
    warnings = []
    for name, status in hub.signers.status().items():
        if not status.get("not_after"):
            warnings.append(f"signer {name}: certificate unreadable ({status.get('state')})")
            continue
        checked += 1
        not_after = datetime.fromisoformat(status["not_after"])
        if not_after <= horizon:
            warnings.append(f"signer {name} certificate {status.get('certificate_number')} {_expiry(not_after, now)}")
    for partner, certificates in hub.pipeline.trusted.items():
        for cert in certificates:
            checked += 1
            if cert.not_valid_after_utc <= horizon:
                warnings.append(f"{partner}'s trusted certificate {certificate_number(cert)} "
                                f"{_expiry(cert.not_valid_after_utc, now)}")
    for warning in warnings:
        log.warning("certificate expiry: %s", warning)
    if not warnings:
        return f"{checked} certificate(s) valid beyond {warn_days} days"
    return f"{len(warnings)} warning(s), {checked} certificate(s) checked against {warn_days} days: " + \
        "; ".join(warnings)


def _expiry(not_after: datetime, now: datetime) -> str:
    if not_after <= now:
        return f"expired {not_after:%Y-%m-%d}"
    return f"expires {not_after:%Y-%m-%d} (in {(not_after - now).days} days)"
