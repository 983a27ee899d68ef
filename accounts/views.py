"""The customer's own account pages: their SSH keys."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from . import audit
from .forms import AddSSHKeyForm
from .models import AuditEntry, SSHKey
from .sshkeys import keys_of


def _get_key_for_user(user, key_id) -> SSHKey:
    """The key if it is this user's own; otherwise 404, exactly as if it did not exist (staff too)."""
    return get_object_or_404(keys_of(user), pk=key_id)


@require_http_methods(["GET", "POST"])
@login_required
def ssh_keys(request):
    """The user's keys, and the form that adds one."""
    form = AddSSHKeyForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        key = form.save()
        audit.record("sshkey.add", key, outcome="succeeded", detail=key.fingerprint)
        if key is not None:
            messages.success(request, f"Added the key “{key.name}” ({key.fingerprint}).")
            return redirect("ssh_keys")
    return render(request, "accounts/ssh_keys.html", {"form": form, "keys": keys_of(request.user)})


@require_http_methods(["GET", "POST"])
@login_required
def ssh_key_delete(request, key_id):
    """A confirmation page; the key goes on its POST."""
    key = _get_key_for_user(request.user, key_id)
    if request.method == "POST":
        audit.record("sshkey.delete", key, outcome="succeeded", detail=key.fingerprint)
        key.delete()
        messages.success(request, f"Deleted the key “{key.name}”.")
        return redirect("ssh_keys")
    return render(request, "accounts/ssh_key_delete.html", {"key": key})


@login_required
def activity(request):
    """The audit log of the user's own account and objects, newest first."""
    entries = AuditEntry.objects.filter(owner=request.user).select_related("actor")
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "accounts/activity.html", {"page": page})
