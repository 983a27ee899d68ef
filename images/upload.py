"""Images uploaded from an operator's browser: streamed to disk, never held in memory.

Django's own handlers keep small files in memory and write big ones to a temporary file
that is gone when the request ends. An image must outlive the request (a task copies it to
the nodes) and may be gigabytes, so the backoffice's add page takes uploads with this
handler instead: each chunk goes straight into a `.part` file in KVMPANEL_DOWNLOAD_DIR,
hashed and counted as it arrives; past KVMPANEL_IMAGE_MAX_BYTES the file is dropped and the
rest of the upload is read and thrown away, so the form can say why. The same checks as a
download then apply (`download.accept_file`); a task then places the file (`place_upload`).

Whoever sets the handler removes, when the request ends, every upload it did not hand to a
task (`discard_unclaimed`): a refused form, an error, a crash of the view leave nothing.

What reaches the handler was first buffered by the server: daphne keeps a request's body in
a temporary file, then passes it to Django (which spools it to another temporary file)
through an in-memory queue. See the README on uploads behind a proxy.
"""

import contextlib
import hashlib
import os
import tempfile

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from .download import PART_SUFFIX, Fetched
from .formats import size_text
from .models import Image
from .placement import place_on_nodes

CHUNK_BYTES = 1024 * 1024


class ImageUpload(UploadedFile):
    """One uploaded file, on disk in the download folder as it arrives."""

    def __init__(self, directory: str, name: str, content_type: str, charset, content_type_extra):
        os.makedirs(directory, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept after the request: a task uploads it)
            dir=directory, prefix="upload-", suffix=PART_SUFFIX, delete=False
        )
        super().__init__(handle, name, content_type, 0, charset, content_type_extra)
        self.path = handle.name
        self.refusal = ""  # why the file was dropped while it arrived, for the form to say
        self.fetched: Fetched | None = None  # set once the file passed download.accept_file
        self.claimed = False  # handed to a task, which removes it when done
        self._digest = hashlib.sha256()

    def take(self, data: bytes, max_bytes: int) -> None:
        self.size += len(data)
        if self.refusal:
            return
        if self.size > max_bytes:
            self.refusal = f"The file is larger than the {size_text(max_bytes)} allowed."
            self.discard()
            return
        self._digest.update(data)
        self.file.write(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def accepted(self, fetched: Fetched) -> None:
        """The checks passed: the file now lives where `fetched` says."""
        self.fetched, self.path = fetched, fetched.path

    def temporary_file_path(self) -> str:
        return self.path

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class ImageUploadHandler(FileUploadHandler):
    """Every file of the request into an ImageUpload (see the module's docstring)."""

    chunk_size = CHUNK_BYTES

    def __init__(self, request=None):
        super().__init__(request)
        self.uploads: list[ImageUpload] = []
        self.max_bytes = settings.KVMPANEL_IMAGE_MAX_BYTES
        self.directory = settings.KVMPANEL_DOWNLOAD_DIR

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        upload = ImageUpload(
            self.directory, self.file_name, self.content_type, self.charset, self.content_type_extra
        )
        self.uploads.append(upload)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.uploads[-1].take(raw_data, self.max_bytes)
        return None  # consumed: no other handler sees it

    def file_complete(self, file_size: int) -> ImageUpload:
        upload = self.uploads[-1]
        if not upload.refusal:
            upload.file.flush()
        return upload


def use_image_upload_handler(request) -> ImageUploadHandler:
    """Before anything reads request.POST or request.FILES: uploads go to disk, checked as they come."""
    handler = ImageUploadHandler(request)
    request.upload_handlers = [handler]
    return handler


def discard_unclaimed(handler: ImageUploadHandler) -> None:
    """When the request ends: remove what no task took over."""
    for upload in handler.uploads:
        if not upload.claimed:
            upload.discard()


def place_upload(image: Image, path: str) -> None:
    """Place a file uploaded in the backoffice (already checked there) on the nodes; the file goes after.

    The web process wrote it into KVMPANEL_DOWNLOAD_DIR: a worker on another machine sees it only
    when that folder is shared (or the worker runs beside the web process).
    """
    if not _is_upload(path):
        image.mark(Image.Status.FAILED, error="the uploaded file is not in the download folder")
        return
    try:
        if not os.path.exists(path):
            image.mark(
                Image.Status.FAILED,
                error="the uploaded file is not on this worker (KVMPANEL_DOWNLOAD_DIR must be shared "
                "between the web process and the workers); upload it again",
            )
            return
        place_on_nodes(image, path)
    finally:
        discard_upload(path)


def discard_upload(path: str) -> None:
    if _is_upload(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _is_upload(path: str) -> bool:
    """The path came through the broker: only an upload in the download folder is ever touched."""
    folder = os.path.realpath(settings.KVMPANEL_DOWNLOAD_DIR)
    name = os.path.basename(path)
    return os.path.dirname(os.path.realpath(path)) == folder and name.startswith("upload-")
