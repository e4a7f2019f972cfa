"""`python run_hub.py demo`: the whole underwriting conversation, both endings, through a real hub on a
temporary folder. The demo plays the insurer and the platform by dropping the fixtures into their `in/`
folders and prints each step as it happens; it exits 0 only if every step arrived.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hub.app import Hub
from hub.channels.folder import write_atomically
from hub.config import DEFAULT_CONFIG, load_config
from hub.models import Receipt, ReturnStatus

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "underwriting" / "valid"
STEP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Step:
    fixture: str
    receiver: str
    says: str


ENDINGS = {
    "issued (新保 → 生效 → 收悉)": [
        Step("insurer-pending-policy-new.xml", "platform",
             "insurer pushes a pending policy (待确认保单, new business)"),
        Step("platform-insurance-application-new.json", "insurer",
             "enterprise confirms: insurance application (确认投保)"),
        Step("insurer-policy-issued-new.xml", "platform", "insurer issues the policy (保单生效通知)"),
        Step("platform-policy-receipt-new.json", "insurer", "enterprise acknowledges the policy (收悉确认)"),
    ],
    "returned (续转 → 退回)": [
        Step("insurer-pending-policy-renewal.xml", "platform", "insurer pushes a pending policy (待确认保单, renewal)"),
        Step("platform-insurance-application-renewal.json", "insurer", "enterprise confirms: insurance application"),
        Step("insurer-application-returned-renewal.xml", "platform", "insurer returns the application (投保申请退回)"),
    ],
}


def _wait(folder: Path, pattern: str, seen: set[Path]) -> Path | None:
    deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for path in sorted(folder.glob(pattern)):
            if path not in seen and not path.name.endswith(".tmp"):
                seen.add(path)
                return path
        time.sleep(0.05)
    return None


def _play(hub: Hub, root: Path, step: Step, seen: set[Path]) -> bool:
    sender = step.fixture.split("-", 1)[0]
    print(f"  → {step.says}\n    {sender} drops {step.fixture}")
    write_atomically(root / sender / "in" / step.fixture, (FIXTURES / step.fixture).read_bytes())
    forwarded = _wait(root / step.receiver / "out", "[!R]*", seen)
    receipt = _wait(root / sender / "out", "Receipt_*", seen)
    if forwarded is None or receipt is None:
        missing = "the forwarded message" if forwarded is None else "the receipt"
        print(f"    ✗ {missing} did not arrive within {STEP_TIMEOUT_SECONDS:.0f} s")
        return False
    answer = hub.pipeline.formats[sender].decode(receipt.read_bytes())
    assert isinstance(answer, Receipt)
    print(f"    ✓ {step.receiver} receives {forwarded.name}\n    ✓ {sender} receives {receipt.name} "
          f"(returnStatus {answer.return_status.value}: {answer.return_info})")
    return answer.return_status is ReturnStatus.ACCEPTED


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="hub-demo-") as tmp:
        root = Path(tmp) / "exchange"
        overrides = {"HUB_STORE__URL": f"sqlite:///{tmp}/hub.db", "HUB_STATUS__ENABLED": "false"}
        for partner in ("platform", "insurer", "customs"):
            overrides[f"HUB_PARTNERS__{partner.upper()}__CHANNEL__ROOT"] = f'"{root / partner}"'
            overrides[f"HUB_PARTNERS__{partner.upper()}__CHANNEL__POLL_SECONDS"] = "0.05"
        logging.getLogger("hub").setLevel(logging.WARNING)
        hub = Hub(load_config(DEFAULT_CONFIG, environ=overrides))
        hub.start()
        print(f"hub running on {tmp}")
        try:
            seen: set[Path] = set()
            ok = True
            for ending, steps in ENDINGS.items():
                print(f"\nEnding: {ending}")
                ok = all(_play(hub, root, step, seen) for step in steps) and ok
            conversations = hub.status_reader.status()["conversations"].get("underwriting", {})
        finally:
            hub.stop()
    print(f"\nconversations: {json.dumps(conversations)}")
    print("demo passed: every step arrived" if ok else "demo FAILED: a step did not arrive")
    return 0 if ok and conversations == {"receipted": 1, "returned": 1} else 1
