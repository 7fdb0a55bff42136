# Makes the certificates of this directory with Python's `cryptography`
# (independent of the code under test). Run from this directory.
import datetime
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization

def cert(key_file, serial, not_before, not_after, out):
    key = serialization.load_pem_private_key(open(key_file, "rb").read(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA test platform certificate")])
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(not_before).not_valid_after(not_after)
         .sign(key, hashes.SHA256()))
    open(out, "wb").write(c.public_bytes(serialization.Encoding.PEM))

utc = datetime.timezone.utc
cert("platform2_key.pem", 0x2C7E5A3B4D6F8091A2B3C4D5E6F708192A3B4C5D,
     datetime.datetime(2026, 12, 1, tzinfo=utc), datetime.datetime(2031, 12, 1, tzinfo=utc),
     "platform2_cert.pem")
cert("platform2_key.pem", 0x11E0A1B2C3D4E5F60718293A4B5C6D7E8F901234,
     datetime.datetime(2020, 1, 1, tzinfo=utc), datetime.datetime(2021, 1, 1, tzinfo=utc),
     "expired_cert.pem")
