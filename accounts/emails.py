"""Links sent by email to prove an address is the user's: at sign-up, and when the address changes.

A link carries the user and the address, signed with the site's key and
dated, so nothing is stored while it is out; it stops working after
KVMPANEL_EMAIL_LINK_HOURS, or when the account's address has moved on.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

SALT = "kvmpanel.accounts.confirm-email"


class BadLink(Exception):
    """The link is forged, expired or no longer fits the account; the message says which."""


def send_confirmation(request, user, email: str) -> None:
    """Mail a link that confirms `email` as the address of `user`."""
    token = signing.dumps({"user": user.pk, "email": email}, salt=SALT)
    link = request.build_absolute_uri(reverse("confirm_email", args=[token]))
    context = {"user": user, "link": link, "hours": settings.KVMPANEL_EMAIL_LINK_HOURS}
    send_mail(
        subject="Confirm your email address for kvmpanel",
        message=render_to_string("accounts/email/confirm_email.txt", context),
        from_email=None,
        recipient_list=[email],
    )


def confirm(token: str):
    """Apply the link: the account's address becomes the one in it, confirmed. The user, or BadLink."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.KVMPANEL_EMAIL_LINK_HOURS * 3600)
    except signing.SignatureExpired:
        raise BadLink("This link has expired. Sign in to get a new one.") from None
    except signing.BadSignature:
        raise BadLink("This link is not valid. Check that you copied all of it.") from None
    users = get_user_model().objects
    user = users.filter(pk=data["user"], is_active=True).first()
    if user is None:
        raise BadLink("This link is not valid any more.")
    if users.filter(email__iexact=data["email"]).exclude(pk=user.pk).exists():
        raise BadLink("Another account uses this address now.")
    user.email = data["email"]
    user.email_confirmed = True
    user.save(update_fields=["email", "email_confirmed"])
    return user
