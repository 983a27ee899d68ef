import re

from django import forms
from django.conf import settings

from . import download
from .formats import size_text
from .models import Image
from .upload import ImageUpload

# Only volumes under the panel's own names may become images: naming any other volume (a VM's disk,
# another image's volume) would let its removal, or its use by other customers, reach that volume.
OWN_VOLUME_PREFIX = Image.OWN_VOLUME_PREFIX
OWN_VOLUME_NAME = re.compile(rf"{re.escape(OWN_VOLUME_PREFIX)}[A-Za-z0-9][A-Za-z0-9._-]{{0,150}}")


class ImageForm(forms.ModelForm):
    """Add an image by URL (downloaded and checked by a task), by uploading a file (checked here, placed
    by a task), or by naming a volume already in the pools."""

    upload = forms.FileField(
        label="or upload a file",
        required=False,
        help_text="A qcow2, raw disk or ISO file from your computer, "
        f"at most {size_text(settings.KVMPANEL_IMAGE_MAX_BYTES).split(' (')[0]}.",
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
        # A plain text box: the admin's URL widget shows a refused URL back as a "Currently:" link.
        widgets = {"source_url": forms.TextInput(attrs={"class": "vURLField", "spellcheck": "false"})}
        help_texts = {
            "checksum_sha256": "Optional: the downloaded or uploaded file must match it. "
            "Filled in from the file.",
            "volume_name": "Leave it empty: the panel picks a name. Or name a volume you put in the "
            f"pools yourself; only the panel's own names ({OWN_VOLUME_PREFIX}…) can become images.",
        }

    def clean_source_url(self):
        url = self.cleaned_data["source_url"]
        if url:
            try:
                download.check_source_url(url, allow_private=settings.KVMPANEL_IMAGE_ALLOW_PRIVATE)
            except download.FetchRefused as refusal:
                raise forms.ValidationError(str(refusal)) from None
        return url

    def clean_volume_name(self):
        name = self.cleaned_data["volume_name"].strip()
        if name and not self.instance.pk and not OWN_VOLUME_NAME.fullmatch(name):
            raise forms.ValidationError(
                f"Only the panel's own image volumes can become images: a name that starts with "
                f"{OWN_VOLUME_PREFIX} (letters, digits, dots, dashes). Or leave it empty and give a URL "
                "or a file."
            )
        return name

    def clean_checksum_sha256(self):
        checksum = self.cleaned_data["checksum_sha256"].strip().lower()
        if checksum and not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise forms.ValidationError("A SHA-256 checksum is 64 hexadecimal characters.")
        return checksum

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload and not isinstance(upload, ImageUpload):
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

    def _accept(self, upload: ImageUpload, checksum: str) -> None:
        """The checks a download passes (checksum, format from the bytes): one implementation for both."""
        try:
            fetched = download.accept_file(
                upload.path, size=upload.size, sha256=upload.sha256, expected_sha256=checksum
            )
        except download.FetchRefused as refusal:
            self.add_error("upload", str(refusal)[:1].upper() + str(refusal)[1:])
            return
        upload.accepted(fetched)
