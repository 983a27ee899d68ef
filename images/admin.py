"""The backoffice's image library: add by URL or upload, follow the copy to the nodes, retry, delete."""

from django.contrib import admin, messages
from django.db import transaction
from django.shortcuts import redirect
from django.urls import path

from accounts import audit
from kvmpanel.units import gib

from . import actions, volumes
from .forms import ImageForm
from .models import Image
from .tasks import fetch_image
from .upload import discard_unclaimed, use_image_upload_handler


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
        if obj is not None and obj.format == Image.Format.ISO:
            about = ("name", "os_family", "active")  # a CD: no disk size, default user, cloud-init or rescue
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
                    "and copies it into every node's pool. Or name a volume you put in the pools "
                    "yourself under the panel's own name (kvmpanel-image-…).",
                },
            ),
        )

    def get_urls(self):
        # The add page takes uploads: its handler must be set before anything reads the request's body,
        # so the page is exempt from the CSRF middleware (which reads it) and changeform_view checks
        # the token itself, after the handler is in place.
        def add_view(request, form_url="", extra_context=None):
            handler = use_image_upload_handler(request)
            try:
                return self.add_view(request, form_url, extra_context)
            finally:
                discard_unclaimed(handler)

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
                actions.add_uploaded_image(obj, upload)
                messages.info(request, f"Copying {obj.name} to the nodes; this page shows its progress.")
            elif actions.add_image(obj):
                messages.info(request, f"Downloading {obj.name}; this page shows its progress.")
            return
        super().save_model(request, obj, form, change)
        audit.record("image.change", obj, outcome="succeeded", detail=obj.source_url)

    def delete_view(self, request, object_id, extra_context=None):
        # Refused before the confirmation page while anything uses the image's volume (a VM's disk is
        # made from it, or holds it as ISO or rescue system; or it is some VM's own volume).
        image = self.get_object(request, object_id)
        users = image and volumes.users_of_volume(image.volume_name, image)
        if users:
            shown = ", ".join(users[:5]) + (", …" if len(users) > 5 else "")
            self.message_user(
                request, f"{image} cannot be deleted: its volume is still used by {shown}.", messages.ERROR
            )
            return redirect("admin:images_image_change", image.pk)
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        # VMs keep their image (PROTECT): the admin refuses, naming them, while any VM uses it.
        actions.delete_image(obj)

    def delete_queryset(self, request, queryset):
        for image in queryset:
            try:
                actions.delete_image(image)
            except actions.ImageInUse as refusal:
                self.message_user(request, f"{image} stays: {refusal}", messages.ERROR)

    @admin.action(description="Download failed images again")
    def retry_download(self, request, queryset):
        retried = 0
        for image in queryset.filter(status=Image.Status.FAILED).exclude(source_url=""):
            image.mark(Image.Status.PENDING)
            transaction.on_commit(lambda pk=image.pk: fetch_image.delay(pk))
            retried += 1
        messages.info(request, f"Downloading {retried} image(s) again.")
