"""The RFB (VNC) security handshake, done by the bridge on the browser's behalf.

The bridge authenticates to QEMU's VNC server with the VM's password, then
offers the browser "no authentication" on a connection that only a valid
one-time token opened. So the browser never learns the VNC password.
(RFB 3.8: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst)
"""

import struct
from collections.abc import Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

VERSION = b"RFB 003.008\n"
SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2

Recv = Callable[[int], bytes]  # returns exactly n bytes, or raises RFBError
Send = Callable[[bytes], None]


class RFBError(Exception):
    """The handshake failed; the message says why, for the user."""


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """DES-encrypt the server's 16-byte challenge with the password, as VNC authentication does.

    VNC uses the password (8 bytes, zero-padded) as a DES key with each byte's
    bits reversed. Triple DES with one key repeated three times is single DES.
    """
    key = password.encode()[:8].ljust(8, b"\0")
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in key)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - the protocol's
    return encryptor.update(challenge) + encryptor.finalize()


def authenticate_to_server(recv: Recv, send: Send, password: str) -> None:
    """Handshake with the VNC server up to a successful SecurityResult."""
    version = recv(12)
    if not version.startswith(b"RFB 003."):
        raise RFBError("the VM's display did not answer as a VNC server")
    send(VERSION)
    (count,) = struct.unpack("!B", recv(1))
    if count == 0:
        raise RFBError(f"the VNC server refused: {_reason(recv)}")
    offered = set(recv(count))
    if SECURITY_VNC_AUTH in offered:
        send(struct.pack("!B", SECURITY_VNC_AUTH))
        send(vnc_auth_response(password, recv(16)))
    elif SECURITY_NONE in offered:
        send(struct.pack("!B", SECURITY_NONE))
    else:
        raise RFBError(f"the VNC server offers no security type we speak ({sorted(offered)})")
    (result,) = struct.unpack("!I", recv(4))
    if result != 0:
        raise RFBError(f"the VNC server refused the password: {_reason(recv)}")


def accept_client(recv: Recv, send: Send) -> None:
    """Handshake with the browser, offering only "None": the token was the authentication."""
    send(VERSION)
    version = recv(12)
    if version != VERSION:
        raise RFBError("the client does not speak RFB 3.8")
    send(struct.pack("!BB", 1, SECURITY_NONE))
    (chosen,) = struct.unpack("!B", recv(1))
    if chosen != SECURITY_NONE:
        raise RFBError("the client chose a security type we did not offer")
    send(struct.pack("!I", 0))


def _reason(recv: Recv) -> str:
    (length,) = struct.unpack("!I", recv(4))
    return recv(min(length, 1024)).decode("utf-8", "replace")
