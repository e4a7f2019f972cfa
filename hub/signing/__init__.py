"""Signing library of the hub: the E-Port XML-DSig profile and the signers. Imports nothing of the hub.

signed = sign_document(xml, signer, "rsa-sha256")
verified = verify_document(xml, partner_certificates)   # raises a VerificationError with .code
"""

from .algorithms import ALGORITHMS, DEFAULT, SignatureAlgorithm, algorithm
from .base import Signer, SignerStatus
from .certificates import CertificateInfo, certificate_number, load_certificate
from .errors import SIGNATURE_CHECK_FAILED, SignerError, SigningError, VerificationError
from .pin_guard import blocks, unblock
from .profile import VerifiedSignature, sign_document, verify_document
from .secret import Secret
from .software import SoftwareKeySigner
from .worker import SigningWorker

__all__ = [
    "ALGORITHMS",
    "DEFAULT",
    "SIGNATURE_CHECK_FAILED",
    "CertificateInfo",
    "Secret",
    "SignatureAlgorithm",
    "Signer",
    "SignerError",
    "SignerStatus",
    "SigningError",
    "SigningWorker",
    "SoftwareKeySigner",
    "VerificationError",
    "VerifiedSignature",
    "algorithm",
    "blocks",
    "certificate_number",
    "load_certificate",
    "sign_document",
    "unblock",
    "verify_document",
]
