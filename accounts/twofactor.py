"""Two-factor sign-in: a TOTP authenticator app, and single-use recovery codes for when it is lost.

Built on django-otp: a TOTPDevice remembers the last time step it accepted, so
a code works once, and both device kinds slow down guessing (throttling). The
secret goes to the user's screen once, as a QR code and as text, during setup;
it is never sent by email.
"""

import base64
import io

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib.auth import update_session_auth_hash
from django.db import transaction
from django_otp import DEVICE_ID_SESSION_KEY, devices_for_user
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import audit

RECOVERY_CODE_COUNT = 10
AUTHENTICATOR = "Authenticator app"
RECOVERY = "Recovery codes"


def is_enabled(user) -> bool:
    """Whether the user signs in with a second factor (an authenticator, and recovery codes with it)."""
    return user.two_factor_enabled


def must_set_up(user) -> bool:
    """Staff must turn two-factor on before they may do anything (KVMPANEL_STAFF_2FA_REQUIRED)."""
    return user.is_staff and settings.KVMPANEL_STAFF_2FA_REQUIRED and not is_enabled(user)


def owes_second_factor(user, verified: bool) -> bool:
    """The one rule every door applies (pages, websockets, the VNC bridge): a signed-in user may act
    only after giving their second factor in this session (`verified`), and staff only once they
    have one at all."""
    return (is_enabled(user) and not verified) or must_set_up(user)


def session_is_verified(user, session) -> bool:
    """Whether `session` passed the second factor with one of `user`'s devices (what django-otp's
    middleware reads for pages, for doors that read the session themselves)."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    device = Device.from_persistent_id(persistent_id) if persistent_id else None
    return device is not None and device.user_id == user.pk and device.confirmed


def pending_device(user) -> TOTPDevice:
    """The unconfirmed authenticator being set up (the same one while the setup page is reloaded)."""
    device = TOTPDevice.objects.devices_for_user(user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name=AUTHENTICATOR, confirmed=False)


def qr_code_svg(device: TOTPDevice) -> str:
    """The otpauth:// URL of the device as an inline SVG QR code (made here: no outside service sees it)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def secret_text(device: TOTPDevice) -> str:
    """The secret in base32, in groups of four, for typing into an app by hand."""
    text = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def confirm(request, device: TOTPDevice, code: str) -> list[str] | None:
    """Turn two-factor on if `code` comes from the pending device; the new recovery codes, or None."""
    if not device.verify_token(_digits(code)):
        return None
    user = request.user
    with transaction.atomic():
        TOTPDevice.objects.devices_for_user(user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = new_recovery_codes(user)
        _set_enabled(user, True)
    # Other sessions of the user end (they never gave a code); this one has just proven it.
    update_session_auth_hash(request, user)
    otp_login(request, device)
    audit.record("account.2fa_enable", request.user, outcome="succeeded", owner=request.user)
    return codes


def new_recovery_codes(user) -> list[str]:
    """Replace the user's recovery codes with fresh ones, each usable once; shown to the user once."""
    device, _ = StaticDevice.objects.get_or_create(user=user, defaults={"name": RECOVERY, "confirmed": True})
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def recovery_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user).count()


@transaction.atomic
def verify(user, code: str):
    """The device that accepts `code` (an authenticator code, or a recovery code, used up), else None.

    The devices are locked while checked, so two requests racing with one code
    cannot both pass: the second sees the first's last time step, or no token.
    """
    for device in devices_for_user(user, confirmed=True, for_verify=True):
        candidate = _digits(code) if isinstance(device, TOTPDevice) else code.strip().lower()
        if device.verify_token(candidate):
            return device
    return None


def disable(request) -> None:
    """Remove every second factor of the signed-in user; their other sessions end."""
    user = request.user
    with transaction.atomic():
        for device in devices_for_user(user, confirmed=None):
            device.delete()
        _set_enabled(user, False)
    update_session_auth_hash(request, user)
    audit.record("account.2fa_disable", user, outcome="succeeded", owner=user)


def _set_enabled(user, enabled: bool) -> None:
    user.two_factor_enabled = enabled
    user.save(update_fields=["two_factor_enabled"])


def _digits(code: str) -> str:
    """Authenticator apps show "123 456"; people paste it with the space."""
    return "".join(code.split())
