#!/usr/bin/python3
"""Verifies the DKIM signature of one message with dkimpy (Debian's
python3-dkim), the way a receiving mail server would, but with the public
key given instead of asked from DNS.

    dkim-verify.py MESSAGE SELECTOR DOMAIN PUBLIC_KEY_BASE64

Exit 0 and "verified" when the message carries a valid signature by
SELECTOR._domainkey.DOMAIN; exit 1 and the reason otherwise.
"""
import sys

try:
    import dkim
except ImportError:
    sys.exit("dkim-verify.py: python3-dkim is not installed (scripts/install-host-deps.sh installs it)")


def main():
    path, selector, domain, pub = sys.argv[1:5]
    with open(path, "rb") as f:
        msg = f.read()
    # The wire form: CRLF line ends (postcat prints LF).
    msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    want = f"{selector}._domainkey.{domain}.".encode()
    record = f"v=DKIM1; k=rsa; p={pub}".encode()

    def dns(name, timeout=5):
        name = name if isinstance(name, bytes) else name.encode()
        return record if name.rstrip(b".") == want.rstrip(b".") else None

    d = dkim.DKIM(msg)
    try:
        ok = d.verify(dnsfunc=dns)
    except dkim.DKIMException as e:
        print(f"not verified: {e}")
        return 1
    if not ok:
        print("not verified: the signature does not match")
        return 1
    if d.domain != domain.encode() or d.selector != selector.encode():
        print(f"signed by {d.selector!r}._domainkey.{d.domain!r}, want {selector}._domainkey.{domain}")
        return 1
    print(f"verified: d={domain} s={selector} h={b':'.join(d.include_headers).decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
