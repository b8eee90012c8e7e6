"""Delivery backends: Maildir (embedded default), LMTP and SMTP downstreams."""

from mailrouter.delivery.deliverer import Copy, Deliverer
from mailrouter.delivery.lmtp import LMTPClient
from mailrouter.delivery.maildir import Maildir, encode_mutf7, folder_dirname
from mailrouter.delivery.smtp import PartialDeliveryError, SMTPClient
from mailrouter.values import Downstream

__all__ = ["Copy", "Deliverer", "Downstream", "LMTPClient", "Maildir", "PartialDeliveryError",
           "SMTPClient", "encode_mutf7", "folder_dirname"]
