import tests.support.webhookcluster as w
from tests.support.tlsutil import CA

_orig = w.webhook_configurations


def _wrong_ca(url, ca_pem, *a, **k):  # a caBundle of another CA
    return _orig(url, CA().cert_pem, *a, **k)


w.webhook_configurations = _wrong_ca
