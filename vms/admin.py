"""The staff backoffice: Django admin over nodes, plans, images, VMs and operations."""

import re

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q
from django.urls import path

from accounts import audit
from accounts.admin import AuditedAdmin, ReadOnlyAdmin

from . import actions, catalog, imagefetch, uploads
from .choices import OperationKind, VMState
from .models import Image, Node, Operation, Plan, VirtualMachine
from .tasks import fetch_image, remove_image_volumes
from .templatetags.vm_tags import gib


@admin.register(Node)
class NodeAdmin(AuditedAdmin):
    list_display = (
        "name",
        "uri",
        "status",
        "virt_type",
        "cpus",
        "memory_mib",
        "storage",
        "vm_count",
        "last_seen_at",
    )
    list_filter = ("status", "virt_type")
    search_fields = ("name", "uri", "hostname")
    readonly_fields = (
        "hostname",
        "cpus",
        "memory_mib",
        "storage",
        "libvirt_version",
        "last_seen_at",
        "last_error",
        "reconciled_at",
        "stray_count",
    )
    fieldsets = (
        (None, {"fields": ("name", "uri", "status", "virt_type", "pool_name", "network_name")}),
        ("As libvirt last reported", {"fields": readonly_fields}),
    )

    @admin.display(description="domains no VM owns")
    def stray_count(self, node):
        return len(node.stray_domains)

    @admin.display(description="storage free")
    def storage(self, node):
        return f"{gib(node.storage_available_bytes)} of {gib(node.storage_capacity_bytes)}"

    def get_queryset(self, request):
        # One query for the list, not one count per node row.
        live_vms = Count("vms", filter=~Q(vms__state=VMState.DELETED))
        return super().get_queryset(request).annotate(_vm_count=live_vms)

    @admin.display(description="VMs", ordering="_vm_count")
    def vm_count(self, node):
        return node._vm_count


@admin.register(Plan)
class PlanAdmin(AuditedAdmin):
    list_display = ("name", "vcpus", "memory_mib", "disk_gb", "active")
    list_filter = ("active",)
    list_editable = ("active",)


class ImageForm(forms.ModelForm):
    """Add an image by URL (downloaded and checked by a task), by uploading a file (checked here, placed
    by a task), or by naming a volume already in the pools."""

    upload = forms.FileField(
        label="or upload a file",
        required=False,
        help_text="A qcow2, raw disk or ISO file from your computer, "
        f"at most {imagefetch.size_text(settings.KVMPANEL_IMAGE_MAX_BYTES).split(' (')[0]}.",
    )

    class Meta:
        model = Image
        fields = [
            "name",
            "os_family",
            "source_url",
            "checksum_sha256",
            "volume_name",
            "min_disk_gb",
            "default_user",
            "cloud_init",
            "rescue",
            "active",
        ]
        help_texts = {
            "checksum_sha256": "Optional: the downloaded or uploaded file must match it. "
            "Filled in from the file.",
            "volume_name": "Volume name in each node's storage pool (leave it empty: the panel picks one).",
        }

    def clean_source_url(self):
        url = self.cleaned_data["source_url"]
        if url:
            try:
                imagefetch.check_source_url(url, allow_private=settings.KVMPANEL_IMAGE_ALLOW_PRIVATE)
            except imagefetch.FetchRefused as refusal:
                raise forms.ValidationError(str(refusal)) from None
        return url

    def clean_checksum_sha256(self):
        checksum = self.cleaned_data["checksum_sha256"].strip().lower()
        if checksum and not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise forms.ValidationError("A SHA-256 checksum is 64 hexadecimal characters.")
        return checksum

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload and not isinstance(upload, uploads.ImageUpload):
            # Only the add page streams uploads to disk (ImageAdmin.get_urls); nowhere else takes files.
            raise forms.ValidationError("Files can only be uploaded on the page that adds an image.")
        if upload and upload.refusal:
            raise forms.ValidationError(upload.refusal)
        return upload

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk:
            return cleaned
        url, upload = cleaned.get("source_url"), cleaned.get("upload")
        if url and (upload or "upload" in self.errors):
            raise forms.ValidationError("Give either a download URL or a file to upload, not both.")
        given = url or upload or cleaned.get("volume_name")
        if not given and not self.has_error("source_url") and not self.has_error("upload"):
            raise forms.ValidationError(
                "Give a download URL or a file to upload (or the name of a volume already in the pools)."
            )
        if upload and not self.has_error("checksum_sha256"):
            self._accept(upload, cleaned.get("checksum_sha256", ""))
        return cleaned

    def _accept(self, upload: uploads.ImageUpload, checksum: str) -> None:
        """The checks a download passes (checksum, format from the bytes): one implementation for both."""
        try:
            fetched = imagefetch.accept_file(
                upload.path, size=upload.size, sha256=upload.sha256, expected_sha256=checksum
            )
        except imagefetch.FetchRefused as refusal:
            self.add_error("upload", str(refusal)[:1].upper() + str(refusal)[1:])
            return
        upload.accepted(fetched)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    form = ImageForm
    list_display = ("name", "os_family", "format", "status_and_progress", "min_disk_gb", "size", "active")
    list_filter = ("status", "os_family", "format", "active")
    search_fields = ("name", "volume_name", "source_url")
    actions = ["retry_download"]

    def get_readonly_fields(self, request, obj=None):
        facts = ("status_and_progress", "error", "format", "size_bytes", "on_nodes", "created_at")
        if obj is None:
            return ()
        # The file is fixed once added: a new file is a new image.
        return (*facts, "source_url", "checksum_sha256", "volume_name")

    def get_fieldsets(self, request, obj=None):
        about = ("name", "os_family", "min_disk_gb", "default_user", "cloud_init", "rescue", "active")
        if obj is not None:
            source = ("source_url", "checksum_sha256", "volume_name")
            facts = ("status_and_progress", "error", "format", "size_bytes", "on_nodes", "created_at")
            return ((None, {"fields": about}), ("The file", {"fields": (*source, *facts)}))
        return (
            (None, {"fields": about}),
            (
                "The file",
                {
                    "fields": ("source_url", "upload", "checksum_sha256", "volume_name"),
                    "description": "Give a download URL, or upload a file from your computer: the panel "
                    "checks it (qcow2, raw disk with a partition table, or ISO; the SHA-256 when given) "
                    "and copies it into every node's pool. Or name a volume already in the pools.",
                },
            ),
        )

    def get_urls(self):
        # The add page takes uploads: its handler must be set before anything reads the request's body,
        # so the page is exempt from the CSRF middleware (which reads it) and changeform_view checks
        # the token itself, after the handler is in place.
        def add_view(request, form_url="", extra_context=None):
            handler = uploads.use_image_upload_handler(request)
            try:
                return self.add_view(request, form_url, extra_context)
            finally:
                uploads.discard_unclaimed(handler)

        add_view.csrf_exempt = True
        info = self.opts.app_label, self.opts.model_name
        add_url = path("add/", self.admin_site.admin_view(add_view), name="{}_{}_add".format(*info))
        return [add_url, *(url for url in super().get_urls() if url.name != add_url.name)]

    @admin.display(description="in the pools of")
    def on_nodes(self, image):
        nodes = [
            placement.node.name for placement in image.placements.select_related("node") if placement.ready
        ]
        return ", ".join(nodes) or "no node yet"

    @admin.display(description="size")
    def size(self, image):
        return gib(image.size_bytes)

    @admin.display(description="status", ordering="status")
    def status_and_progress(self, image):
        if image.status == Image.Status.DOWNLOADING and image.progress_percent is not None:
            return f"{image.get_status_display()} {image.progress_percent} % of {gib(image.total_bytes)}"
        return image.get_status_display()

    def save_model(self, request, obj, form, change):
        if not change:
            upload = form.cleaned_data.get("upload")
            if upload:
                catalog.add_uploaded_image(obj, upload)
                messages.info(request, f"Copying {obj.name} to the nodes; this page shows its progress.")
            elif catalog.add_image(obj):
                messages.info(request, f"Downloading {obj.name}; this page shows its progress.")
            return
        super().save_model(request, obj, form, change)
        audit.record("image.change", obj, outcome="succeeded", detail=obj.source_url)

    def delete_model(self, request, obj):
        # VMs keep their image (PROTECT): the admin refuses, naming them, while any VM uses it.
        catalog.delete_image(obj)

    def delete_queryset(self, request, queryset):
        volume_names = list(queryset.values_list("volume_name", flat=True))
        super().delete_queryset(request, queryset)
        for volume_name in volume_names:
            transaction.on_commit(lambda name=volume_name: remove_image_volumes.delay(name))

    @admin.action(description="Download failed images again")
    def retry_download(self, request, queryset):
        retried = 0
        for image in queryset.filter(status=Image.Status.FAILED).exclude(source_url=""):
            image.mark(Image.Status.PENDING)
            transaction.on_commit(lambda pk=image.pk: fetch_image.delay(pk))
            retried += 1
        messages.info(request, f"Downloading {retried} image(s) again.")


class OperationInline(admin.TabularInline):
    model = Operation
    extra = 0
    can_delete = False
    fields = ("kind", "status", "user", "attempt", "error", "created_at", "finished_at")
    readonly_fields = fields
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False


def _power_action(kind: str, label: str):
    @admin.action(description=label)
    def action(modeladmin, request, queryset):
        done = 0
        for vm in queryset.select_related("node"):
            try:
                actions.request(vm, request.user, kind)
                done += 1
            except actions.ActionRefused as refusal:
                modeladmin.message_user(request, f"{vm}: {refusal}", messages.WARNING)
        if done:
            modeladmin.message_user(request, f"{label}: requested for {done} VM(s).", messages.SUCCESS)

    action.__name__ = f"request_{kind}"
    return action


@admin.register(VirtualMachine)
class VirtualMachineAdmin(AuditedAdmin):
    list_display = ("name", "owner", "state", "node", "plan", "image", "created_at")
    list_filter = ("state", "node", "plan", "image")
    search_fields = ("hostname", "display_name", "uuid", "owner__username", "owner__email")
    list_select_related = ("owner", "node", "plan", "image")
    readonly_fields = ("uuid", "state", "state_changed_at", "created_at", "updated_at", "deleted_at")
    fields = ("uuid", "owner", "display_name", "hostname", "node", "plan", "image", *readonly_fields[1:])
    inlines = [OperationInline]
    actions = [
        _power_action(OperationKind.START, "Start"),
        _power_action(OperationKind.SHUTDOWN, "Shut down"),
        _power_action(OperationKind.FORCE_OFF, "Force off"),
        _power_action(OperationKind.REBOOT, "Reboot"),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Placement and size change through operations (migrate, resize), not by editing rows.
        if obj is not None:
            return (*self.readonly_fields, "owner", "hostname", "node", "plan", "image")
        return self.readonly_fields

    def has_add_permission(self, request):
        return False  # VMs are created through the portal so a task builds them

    def has_delete_permission(self, request, obj=None):
        return False  # deleting removes a disk: it goes through the Delete operation


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ("kind", "vm", "user", "status", "attempt", "created_at", "took")
    list_filter = ("status", "kind")
    search_fields = ("vm__hostname", "vm__uuid", "user__username", "error")
    list_select_related = ("vm", "user")
    date_hierarchy = "created_at"

    @admin.display(description="took")
    def took(self, operation):
        return f"{operation.duration.total_seconds():.1f} s" if operation.duration else "—"
