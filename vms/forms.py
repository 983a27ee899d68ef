import ipaddress
import re
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import password_validation
from django.db.models import Q

from accounts.sshkeys import keys_of
from images.models import Image
from kvmpanel.forms import StyledForm, style_fields

from . import cloudinit
from .choices import VMState
from .models import Plan, VirtualMachine
from .validators import validate_hostname


class FirstBootFields(StyledForm, forms.Form):
    """How the customer will log in to a new install: a password, SSH keys, optional cloud-config."""

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="For the image's default user (e.g. debian). Stored only as a hash.",
    )
    ssh_keys = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="SSH keys",
        help_text="Keys from your account that may log in as the default user.",
    )
    user_data = forms.CharField(
        required=False,
        label="Cloud-config (optional)",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "placeholder": "#cloud-config"}),
        help_text="Extra first-boot settings in cloud-init's #cloud-config YAML "
        f"(at most {cloudinit.MAX_USER_DATA_BYTES // 1024} KiB).",
    )

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner
        keys = keys_of(owner)
        self.fields["ssh_keys"].queryset = keys
        if not self.is_bound and len(only := list(keys[:2])) == 1:
            self.fields["ssh_keys"].initial = [only[0].pk]  # the one key the customer has: ticked

    def clean_password(self):
        password = self.cleaned_data["password"]
        if password:
            password_validation.validate_password(password, self.owner)
            try:
                cloudinit.check_password(password)  # bcrypt's own limits (length in bytes, NUL)
            except ValueError as error:
                raise forms.ValidationError(str(error)) from None
        return password

    def clean_user_data(self):
        try:
            return cloudinit.validate_user_data(self.cleaned_data["user_data"])
        except cloudinit.UserDataError as error:
            raise forms.ValidationError(str(error)) from None

    def check_login_possible(self, image: Image | None) -> None:
        """A cloud image locks its default user: without a password or a key nobody could log in."""
        cleaned = self.cleaned_data
        can_log_in = cleaned.get("password") or cleaned.get("ssh_keys") or "password" in self.errors
        if image and image.cloud_init and not can_log_in:
            self.add_error("password", "Set a password or pick an SSH key, so you can log in.")


class CreateVMForm(FirstBootFields):
    plan = forms.ModelChoiceField(queryset=Plan.objects.filter(active=True), empty_label=None)
    image = forms.ModelChoiceField(
        queryset=Image.objects.usable(), empty_label=None, label="Operating system"
    )
    hostname = forms.CharField(
        max_length=253,
        help_text="Letters, digits and hyphens, e.g. web-1 or web-1.example.com.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    display_name = forms.CharField(
        max_length=100, required=False, help_text="Optional; shown in the panel instead of the hostname."
    )

    field_order = ["plan", "image", "hostname", "display_name", "password", "ssh_keys", "user_data"]

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, owner=owner, **kwargs)
        style_fields(self)

    def clean_hostname(self):
        hostname = self.cleaned_data["hostname"].strip().lower()
        validate_hostname(hostname)
        if self.owner and VirtualMachine.objects.live().filter(owner=self.owner, hostname=hostname).exists():
            raise forms.ValidationError(f"You already have a VM named {hostname}.")
        return hostname

    def clean(self):
        cleaned = super().clean()
        plan, image = cleaned.get("plan"), cleaned.get("image")
        if plan and image and plan.disk_gb < image.min_disk_gb:
            self.add_error("plan", f"{image} needs a disk of at least {image.min_disk_gb} GiB.")
        self.check_login_possible(image)
        return cleaned


class ReinstallForm(FirstBootFields):
    """Reinstall from the same or another image; the hostname typed again confirms the loss of data."""

    image = forms.ModelChoiceField(
        queryset=Image.objects.usable(), empty_label=None, label="Operating system"
    )
    confirm_hostname = forms.CharField(
        label="Type the VM's hostname to confirm",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    field_order = ["image", "password", "ssh_keys", "user_data", "confirm_hostname"]

    def __init__(self, *args, vm: VirtualMachine, **kwargs):
        super().__init__(*args, owner=vm.owner, **kwargs)
        self.vm = vm
        self.fields["image"].initial = vm.image_id
        self.fields["confirm_hostname"].label = f"Type {vm.hostname} to confirm"  # as Delete asks
        style_fields(self)

    def clean_confirm_hostname(self):
        typed = self.cleaned_data["confirm_hostname"].strip().lower()
        if typed != self.vm.hostname:
            raise forms.ValidationError("Type the VM's hostname exactly to confirm.")
        return typed

    def clean(self):
        cleaned = super().clean()
        image = cleaned.get("image")
        if image and self.vm.plan.disk_gb < image.min_disk_gb:
            self.add_error("image", f"{image} needs a disk of at least {image.min_disk_gb} GiB.")
        self.check_login_possible(image)
        return cleaned


class ResetPasswordForm(StyledForm, forms.Form):
    password = forms.CharField(
        label="New password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, vm: VirtualMachine, **kwargs):
        super().__init__(*args, **kwargs)
        self.vm = vm
        user = vm.image.default_user
        self.fields["password"].help_text = f"For the user {user}; sent to the guest only as a hash."
        style_fields(self)

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password, self.vm.owner)
        try:
            cloudinit.check_password(password)
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
        return password


class ResizeForm(StyledForm, forms.Form):
    """Pick the VM's new plan: any offered plan whose disk is at least as large (disks only grow)."""

    plan = forms.ModelChoiceField(queryset=None, empty_label=None, label="New plan")

    def __init__(self, *args, vm: VirtualMachine, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plan"].queryset = Plan.objects.filter(active=True, disk_gb__gte=vm.plan.disk_gb).exclude(
            pk=vm.plan_id
        )
        self.fields[
            "plan"
        ].help_text = f"Now {vm.plan}. Plans with a smaller disk are not offered: a disk can only grow."
        style_fields(self)


class RescueForm(FirstBootFields):
    """Pick a rescue system and how to log in to it (the VM's own disk is attached, not changed)."""

    image = forms.ModelChoiceField(
        queryset=Image.objects.rescue_systems(), empty_label=None, label="Rescue system"
    )
    field_order = ["image", "password", "ssh_keys"]

    def __init__(self, *args, vm: VirtualMachine, **kwargs):
        super().__init__(*args, owner=vm.owner, **kwargs)
        del self.fields["user_data"]
        style_fields(self)

    def clean(self):
        cleaned = super().clean()
        self.check_login_possible(cleaned.get("image"))
        return cleaned


class VMSearchForm(forms.Form):
    """The VM list's search (hostname, display name or address) and state filter, as GET parameters."""

    q = forms.CharField(required=False, max_length=100, label="Search")
    state = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any state"),
            *((value, label) for value, label in VMState.choices if value != "deleted"),
        ],
    )

    def filter(self, queryset):
        """`queryset` narrowed to what was asked (nothing, when the input is not valid)."""
        if not self.is_valid():
            return queryset
        text, state = self.cleaned_data["q"].strip(), self.cleaned_data["state"]
        if text:
            queryset = queryset.filter(_matching(text))
            if _ADDRESS_TEXT.match(text):
                queryset = queryset.distinct()  # a VM with two matching addresses is listed once
        if state:
            queryset = queryset.filter(state=state)
        return queryset

    def query_string(self) -> str:
        """The search as URL parameters, for the pages' links ("" when there is none)."""
        if not self.is_valid():
            return ""
        given = {name: value for name, value in self.cleaned_data.items() if value}
        return urlencode(given)


_ADDRESS_TEXT = re.compile(r"^[0-9a-fA-F.:]+$")


def _matching(text: str) -> Q:
    """VMs whose hostname or name holds `text`, or that hold the address it names (or begins).

    A whole IPv6 address also finds the VM whose /64 it falls in: the abuse desk has an address
    from a log, not the network the panel gave out.
    """
    match = Q(hostname__icontains=text) | Q(display_name__icontains=text)
    if not _ADDRESS_TEXT.match(text):
        return match
    by_address = Q(interfaces__addresses__address__istartswith=text)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return match | by_address
    if address.version == 6:
        network = ipaddress.ip_network(f"{address}/64", strict=False)
        by_address |= Q(interfaces__addresses__address=str(network.network_address))
    return match | by_address
